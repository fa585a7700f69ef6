"""What the import driver, the format modules and the command line share: the argument
types (:class:`DomainSource`, :class:`ImportOptions`, ``--domain`` parsing), the errors,
the records a line parser returns (:class:`Review`, :class:`RawMeta`) and
:class:`FormatSpec`, which is all a format module contributes."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

# Local image files are looked up as ``<images_dir>/<item_id><ext>``; the first
# extension in this order wins when several exist (case-insensitive extension).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")

DEFAULT_DESCRIPTION_MAX_CHARS = 1000
_DOMAIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class ImporterError(ValueError):
    """A problem with the importer's arguments (bad domain spec, missing file, ...).

    Problems *inside* an input file are :class:`~model.data.dataset.DatasetError`.
    """


class MalformedLine(ValueError):
    """Raised by a line parser; the driver adds the file name and line number."""


class Review(NamedTuple):
    """One interaction as read from a raw file. ``timestamp`` is unix seconds.

    A NamedTuple rather than a frozen dataclass: one is built per input line, and a frozen
    dataclass's ``__init__`` costs several times more.
    """

    user: str
    item: str
    timestamp: int
    rating: float


@dataclass(slots=True)
class RawMeta:
    """Item metadata as extracted from one raw line, before cleaning.

    ``brand`` is shown in ``categories`` as ``"<brand_label>: <brand>"`` (2018 has a
    ``brand`` field, 2023 a ``store`` field, and the label keeps that distinction).
    """

    item_id: str
    title: str = ""
    categories: list[str] = field(default_factory=list)
    brand: str = ""
    brand_label: str = "brand"
    description: list[str] = field(default_factory=list)


ReviewParser = Callable[[bytes, int], Review | None]
"""``(line, lineno) -> Review``; ``None`` skips the line silently (e.g. a CSV header)."""
MetaParser = Callable[[bytes, int], RawMeta]


@dataclass(frozen=True)
class FormatSpec:
    """What a raw format contributes: a parser per file kind.

    ``review_parser(path)`` may look at the file (e.g. sniff CSV vs JSON) to choose.
    """

    name: str
    review_parser: Callable[[Path], ReviewParser]
    meta_parser: Callable[[Path], MetaParser]


@dataclass(frozen=True)
class DomainSource:
    """One domain of an import: its name, interaction file and optional metadata file."""

    name: str
    reviews: Path
    meta: Path | None = None


@dataclass
class ImportOptions:
    """Controls of an import. Every field is documented with its default."""

    min_rating: float | None = None
    """Keep only rows with rating >= this (None: every row is kept as a positive)."""
    images_dir: Path | None = None
    """Folder of local images named ``<item_id>.jpg|.jpeg|.png|.webp``; copied to
    ``<out>/images/``. None: the ``image`` column stays empty. Never fetched online."""
    min_user_domains: int = 1
    """Drop users active in fewer domains than this (2: only cross-domain users)."""
    max_description_chars: int = DEFAULT_DESCRIPTION_MAX_CHARS
    """Cap on the cleaned description length (cut at a word boundary, ``...`` added)."""
    skip_malformed: bool = False
    """Count and skip malformed lines instead of stopping at the first one."""
    overwrite: bool = False
    """Replace an existing ``interactions.csv`` / ``items.csv`` in the output folder."""


def parse_domain_spec(spec: str) -> DomainSource:
    """Parse ``NAME=INTERACTIONS[:META]`` (the ``--domain`` argument of the CLI).

    Paths may not contain ``:`` (there would be no telling where one path ends); use a
    symlink for such a file. An empty META (``food=reviews.jsonl:``) means none.
    """
    name, sep, files = spec.partition("=")
    name = name.strip()
    if not sep or not files:
        raise ImporterError(f"--domain {spec!r}: expected NAME=INTERACTIONS[:META]")
    if not _DOMAIN_NAME.match(name):
        raise ImporterError(
            f"--domain {spec!r}: domain name must be letters, digits, '_', '-' or '.'"
        )
    parts = files.split(":")
    if len(parts) > 2:
        raise ImporterError(
            f"--domain {spec!r}: more than one ':' (paths containing ':' are not supported;"
            " use a symlink)"
        )
    reviews = parts[0].strip()
    meta = parts[1].strip() if len(parts) == 2 else ""
    if not reviews:
        raise ImporterError(f"--domain {spec!r}: missing the interactions file")
    return DomainSource(name, Path(reviews).expanduser(), Path(meta).expanduser() if meta else None)
