"""Importers from raw public review dumps into the project's dataset format.

``FORMATS`` maps a format name (the ``micrec data import <format>`` verb) to its import
function ``(domains, out, options) -> ImportReport``. See :mod:`.driver` for the shared
behaviour (streaming, dedup, cross-domain item conflicts, text cleaning, local images).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from model.data.importers.amazon2018 import import_amazon2018
from model.data.importers.amazon2023 import import_amazon2023
from model.data.importers.base import (
    IMAGE_EXTENSIONS,
    DomainSource,
    ImporterError,
    ImportOptions,
    parse_domain_spec,
)
from model.data.importers.report import DomainReport, ImportReport

ImportFn = Callable[[Sequence[DomainSource], "str | Path", "ImportOptions | None"], ImportReport]

FORMATS: dict[str, ImportFn] = {
    "amazon2023": import_amazon2023,
    "amazon2018": import_amazon2018,
}

__all__ = [
    "FORMATS",
    "IMAGE_EXTENSIONS",
    "DomainReport",
    "DomainSource",
    "ImportOptions",
    "ImportReport",
    "ImporterError",
    "import_amazon2018",
    "import_amazon2023",
    "parse_domain_spec",
]
