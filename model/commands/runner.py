"""Runs a ``micrec`` subcommand: the parser, logging, thread pins, one-line errors.

Each subcommand lives in a module of its own (``model/commands/<name>.py`` for the
library's) that exposes ``register(subparsers) -> None``; the program ``micrec`` itself is
app/cli.py, which adds the service's subcommands (the import direction is app -> model,
never back).

Errors the user can fix (bad files, bad config) are printed as one line, no traceback, and
exit with status 2; configuration errors (:class:`model.runconfig.ConfigError`, which the
service's settings error subclasses) read ``micrec CMD: config error: ...``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Callable, Sequence

from model.data.dataset import DatasetError
from model.runconfig import ConfigError

LIBRARY_COMMANDS = ("data", "encode", "train", "evaluate", "demo")
DESCRIPTION = "MICRec: inductive, cross-domain, multimodal recommendation (library and service)"


class UserError(Exception):
    """An error caused by the user's input; printed as one line without traceback."""


def set_threads(n: int | None = None, *, import_libs: bool = True) -> int:
    """Pin torch/OpenMP/BLAS thread counts (oversubscription makes small batches 10-80x slower).

    ``n`` defaults to ``$MICREC_THREADS`` or the number of cores. ``import_libs=False``
    only sets the environment (torch and OpenMP read it when first imported): for a
    process that may never need torch, e.g. the supervisor of ``micrec serve --workers N``.
    """
    explicit = n
    n = n or int(os.environ.get("MICREC_THREADS", "0")) or (os.cpu_count() or 1)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        if explicit and not import_libs:
            os.environ[var] = str(n)  # what torch.set_num_threads(n) would have forced
        else:
            os.environ.setdefault(var, str(n))
    if not import_libs:
        return n
    import torch

    torch.set_num_threads(n)
    try:
        import faiss

        faiss.omp_set_num_threads(n)
    except ImportError:  # pragma: no cover - faiss is a hard dependency, but keep the CLI usable
        pass
    return n


def build_parser(extra: Sequence[str] = ()) -> argparse.ArgumentParser:
    """Parser with the library subcommands plus the modules named in ``extra``."""
    parser = argparse.ArgumentParser(prog="micrec", description=DESCRIPTION)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--threads", type=int, default=None, help="torch/FAISS threads")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in (*[f"model.commands.{c}" for c in LIBRARY_COMMANDS], *extra):
        importlib.import_module(name).register(sub)
    return parser


def run(argv: Sequence[str] | None, extra: Sequence[str] = ()) -> int:
    parser = build_parser(extra)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:  # faiss logs which CPU build it loaded at INFO, on every command
        logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    set_threads(args.threads, import_libs=not getattr(args, "lazy_threads", False))
    handler: Callable[[argparse.Namespace], int | None] = args.handler
    try:
        return int(handler(args) or 0)
    except ConfigError as err:  # run config ([section] key) or service settings (MICREC_*)
        print(f"micrec {args.command}: config error: {err}", file=sys.stderr)
        return 2
    except (DatasetError, UserError, FileNotFoundError) as err:
        print(f"micrec {args.command}: error: {err}", file=sys.stderr)
        return 2


def main(argv: Sequence[str] | None = None) -> int:
    return run(argv)


if __name__ == "__main__":
    sys.exit(main())
