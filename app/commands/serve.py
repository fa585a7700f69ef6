"""``micrec serve``: run the HTTP service with uvicorn.

Flags override the matching ``MICREC_*`` settings; they are passed to the app (and to
every worker process) through the environment, so ``--workers N`` processes all see the
same configuration. Settings are validated here first so a bad value is one line on
stderr, not a traceback from each worker.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
from typing import Any

from uvicorn.protocols.http.auto import AutoHTTPProtocol

from model.cli import UserError


class NoDelayHTTPProtocol(AutoHTTPProtocol):  # type: ignore[misc,valid-type]
    """uvicorn's HTTP protocol with TCP_NODELAY set on every connection.

    With ``--workers`` > 1 uvicorn binds the listening socket itself with proto 0, and
    asyncio only disables Nagle on sockets whose proto is IPPROTO_TCP; so every response
    after the first on a keep-alive connection waited for the client's delayed ACK:
    ~44 ms per request instead of ~2 ms (bench/serve.py, docs/results/serve.md).
    """

    def connection_made(self, transport: Any) -> None:
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):  # not a TCP socket after all
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(transport)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="run the recommendation HTTP service",
        description="Serve the MICRec HTTP API (settings: MICREC_* environment variables, "
        "see configs/service.example.env).",
    )
    p.add_argument("--host", help="bind address (MICREC_HOST, default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (MICREC_PORT, default 8000)")
    p.add_argument("--workers", type=int, help="worker processes (MICREC_WORKERS, default 1)")
    p.add_argument("--bundle", help="model bundle directory (MICREC_BUNDLE_PATH)")
    p.add_argument("--env-file", help="read MICREC_* settings from this file")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from app.settings import load_settings

    overrides = {
        "MICREC_BUNDLE_PATH": args.bundle,
        "MICREC_HOST": args.host,
        "MICREC_PORT": None if args.port is None else str(args.port),
        "MICREC_WORKERS": None if args.workers is None else str(args.workers),
        "MICREC_ENV_FILE": args.env_file,
    }
    for key, value in overrides.items():
        if value is not None:
            os.environ[key] = value
    settings = load_settings(env_file=args.env_file)  # SettingsError: one line (model.cli)
    if not (settings.bundle_path / "manifest.json").is_file():
        raise UserError(
            f"no model bundle at {settings.bundle_path} (set --bundle or MICREC_BUNDLE_PATH; "
            "`micrec demo build` makes a demo bundle)"
        )
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level=settings.log_level,
        http="app.commands.serve:NoDelayHTTPProtocol",
    )
    return 0
