"""``micrec data import``: placeholder until implemented."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("import", help="(not implemented yet)")
    p.set_defaults(handler=lambda args: print("not implemented yet") or 1)
