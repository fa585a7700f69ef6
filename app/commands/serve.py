"""``micrec serve``: run the HTTP service with uvicorn.

Flags override the matching ``MICREC_*`` settings; they are passed to the app (and to
every worker process) through the environment, so ``--workers N`` processes all see the
same configuration. Settings are validated here first so a bad value is one line on
stderr, not a traceback from each worker.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import socket
from pathlib import Path
from typing import Any

from uvicorn.protocols.http.auto import AutoHTTPProtocol

from app.http.connections import (
    HEADER_TIMEOUT_ENV,
    MAX_CONNECTIONS_ENV,
    MAX_PENDING_ENV,
    ConnectionCapMixin,
    HeaderTimeoutMixin,
)
from model.commands.runner import UserError

log = logging.getLogger("micrec.serve")

__all__ = ["HeaderTimeoutMixin", "NoDelayHTTPProtocol", "register", "run"]


class NoDelayHTTPProtocol(ConnectionCapMixin, HeaderTimeoutMixin, AutoHTTPProtocol):  # type: ignore[misc,valid-type]
    """uvicorn's HTTP protocol with TCP_NODELAY set on every connection, the connection
    caps of :class:`ConnectionCapMixin` and the header read timeout of
    :class:`HeaderTimeoutMixin` (app/http/connections.py).

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
    p.add_argument(
        "--registry", help="serve from this bundle registry (MICREC_REGISTRY_DIR; see bundles)"
    )
    p.add_argument("--env-file", help="read MICREC_* settings from this file")
    # the supervisor of --workers N never needs torch (~160 MB it would hold for nothing);
    # torch and OpenMP read the thread count from the environment where they are imported
    p.set_defaults(handler=run, lazy_threads=True)


def _check_registry(root: Path) -> Path:
    """The registry's current bundle directory (a one-line refusal without one)."""
    from model.registry import BundleRegistry, RegistryError

    try:
        registry = BundleRegistry(root, create=False)
        current = registry.current()
    except RegistryError as err:
        raise UserError(str(err)) from None
    if current is None:
        raise UserError(
            f"bundle registry {root} has no promoted version "
            "(`micrec bundles add DIR --promote` adds and promotes one)"
        )
    try:
        return registry.path(current)
    except RegistryError as err:
        raise UserError(str(err)) from None


def check_encoders(bundle: Path, clip_weights: Path | None) -> None:
    """Refuse, in one line, a start-up whose configured encoder weights are missing or
    not the ones the bundle was built with (model.encoders.records); an encoder with no
    weights configured is not refused here: the service reports it in /readyz."""
    from model.bundle import BundleError, read_manifest
    from model.encoders.records import EncoderRefused, EncoderUnavailable, resolve

    try:
        records = read_manifest(bundle).get("encoders") or {}
    except BundleError:
        return  # the load reports an unreadable bundle itself
    for modality, record in records.items():
        try:
            resolve(modality, record, clip_weights=clip_weights)
        except EncoderRefused as err:
            raise UserError(f"{bundle}: {err}") from None
        except EncoderUnavailable as err:
            log.warning("%s", err)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from app.settings import load_settings

    overrides = {
        "MICREC_BUNDLE_PATH": args.bundle,
        "MICREC_REGISTRY_DIR": args.registry,
        "MICREC_HOST": args.host,
        "MICREC_PORT": None if args.port is None else str(args.port),
        "MICREC_WORKERS": None if args.workers is None else str(args.workers),
        "MICREC_ENV_FILE": args.env_file,
    }
    for key, value in overrides.items():
        if value is not None:
            os.environ[key] = value
    settings = load_settings(
        env_file=args.env_file
    )  # SettingsError: one line (model.commands.runner)
    if settings.registry_dir is not None:
        bundle = _check_registry(settings.registry_dir)
    elif not (settings.bundle_path / "manifest.json").is_file():
        raise UserError(
            f"no model bundle at {settings.bundle_path} (set --bundle or MICREC_BUNDLE_PATH; "
            "`micrec demo build` makes a demo bundle)"
        )
    else:
        bundle = settings.bundle_path
    check_encoders(bundle, settings.clip_weights)
    # for the protocol of every worker (app/http/connections.py)
    os.environ[HEADER_TIMEOUT_ENV] = str(settings.header_timeout_s)
    os.environ[MAX_CONNECTIONS_ENV] = str(settings.max_connections)
    os.environ[MAX_PENDING_ENV] = str(settings.max_pending_per_client)
    _fit_open_files(settings.max_connections)
    supervisor = None
    if settings.encoder_process:  # one encoder process for all workers of this machine
        from app.catalogue.encoding import EncoderSupervisor

        supervisor = EncoderSupervisor(settings.encoder_threads, settings.encoder_nice)
        supervisor.start()
        os.environ.update(supervisor.env())
    try:
        _run_uvicorn(uvicorn, settings)
    finally:
        if supervisor is not None:
            supervisor.stop()
            for key in supervisor.env():  # a stale address must not outlive the process
                os.environ.pop(key, None)
    return 0


OPEN_FILES_RESERVE = 256
"""File descriptors kept for what a worker opens besides connections (store, bundle files,
logs, the encoder process's socket)."""


def _fit_open_files(max_connections: int) -> None:
    """Raises the soft open-file limit so ``max_connections`` sockets fit (up to the hard
    limit); below it the worker would fail to accept (EMFILE) before the cap refuses."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = max_connections + OPEN_FILES_RESERVE
    if soft != resource.RLIM_INFINITY and soft < need:
        new = need if hard == resource.RLIM_INFINITY else min(need, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
            soft = new
    if soft != resource.RLIM_INFINITY and soft < need:
        log.warning(
            "open-file limit %d is below max_connections + %d: lower max_connections or "
            "raise the limit (ulimit -n)",
            soft,
            OPEN_FILES_RESERVE,
        )


def _run_uvicorn(uvicorn: Any, settings: Any) -> None:
    uvicorn.run(
        "app.http.main:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level=settings.log_level,
        http="app.commands.serve:NoDelayHTTPProtocol",
        timeout_keep_alive=settings.keep_alive_timeout_s,
        # no limit_concurrency: it counts open sockets with the requests, so idle or
        # trickling connections made real requests 503 (the app limits requests in flight,
        # the protocol the sockets: app/http/connections.py)
        h11_max_incomplete_event_size=settings.max_header_bytes,
    )
