"""Console entry point ``micrec``: library subcommands plus the service's ``serve``/``demo``."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from model.commands.runner import run

SERVICE_COMMANDS: tuple[str, ...] = (
    "app.commands.serve",
    "app.commands.bundles",
    "app.commands.export",
    "app.commands.retrain",
    "app.commands.trainer",
)


def main(argv: Sequence[str] | None = None) -> int:
    return run(argv, extra=SERVICE_COMMANDS)


if __name__ == "__main__":
    sys.exit(main())
