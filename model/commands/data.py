"""``micrec data``: dataset tools (stats, split, synth, import)."""

from __future__ import annotations

import argparse
import importlib

# Each module registers its own ``micrec data <verb>`` parsers on the ``data`` subparser.
DATA_VERBS = (
    "model.commands.data_stats",
    "model.commands.data_synth",
    "model.commands.data_import",
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="dataset tools: stats, split, synth, import")
    verbs = p.add_subparsers(dest="data_command", required=True)
    for name in DATA_VERBS:
        importlib.import_module(name).register(verbs)
