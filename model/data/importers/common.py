"""Machinery shared by the raw-dump importers.

A format module (:mod:`.amazon2023`, :mod:`.amazon2018`) only knows how to turn *one
line* of its interaction file into a :class:`Review` and one line of its metadata file
into a :class:`RawMeta`. Everything else lives here so that every format behaves the same:

* streaming, line-by-line reads with transparent gzip (detected by magic bytes, not by
  file name), so multi-GB dumps never have to fit in memory as text;
* errors that name the file and line (:class:`~model.data.dataset.DatasetError`), or,
  with ``skip_malformed``, a count and a few warnings instead;
* the multi-domain merge: users are matched across domains by their raw reviewer id, an
  item id keeps the domain where it was first seen (domains in the order given) and its
  rows in later domains are dropped and counted, (user, item) pairs are de-duplicated
  keeping the earliest row, an optional rating threshold and minimum number of domains
  per user;
* item text cleaning (HTML stripped, entities decoded, whitespace collapsed, length
  capped) and optional *local* images (never fetched over the network);
* writing ``interactions.csv`` / ``items.csv`` in the project format
  (``../shared/datasets/README.md``) plus ``import.json`` (provenance and counts).

Memory: rows are kept as integer codes in compact arrays (about 32 bytes per kept row)
plus one dict entry per distinct user and item id; the metadata file is streamed after
the interactions and only the items that survived are kept.
"""

from __future__ import annotations

import csv
import gzip
import html
import io
import json
import logging
import math
import os
import re
import shutil
import zlib
from array import array
from collections import Counter
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

import numpy as np

from model.data.dataset import DatasetError

log = logging.getLogger(__name__)

INTERACTIONS_HEADER = ("user_id", "item_id", "domain", "timestamp", "rating")
ITEMS_HEADER = ("item_id", "domain", "title", "categories", "description", "image")

# Local image files are looked up as ``<images_dir>/<item_id><ext>``; the first
# extension in this order wins when several exist (case-insensitive extension).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")

TITLE_MAX_CHARS = 300
DEFAULT_DESCRIPTION_MAX_CHARS = 1000
_PROGRESS_EVERY = 1_000_000
_MAX_MALFORMED_WARNINGS = 5
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


@dataclass
class DomainReport:
    """Counts of one domain's import (printed by :meth:`ImportReport.format`)."""

    name: str
    reviews: str
    meta: str | None
    rows_read: int = 0
    kept: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    users: int = 0
    items: int = 0
    meta_rows_read: int = 0
    meta_malformed: int = 0
    items_with_meta: int = 0
    items_with_image: int = 0

    def format(self) -> str:
        # In pipeline order, so the counts read as the successive filters.
        dropped = ", ".join(
            f"{self.dropped[k]:,} {label}" for k, label in DROP_REASONS.items() if self.dropped[k]
        )
        lines = [
            f"{self.name}: {self.rows_read:,} rows read, {self.kept:,} kept"
            + (f"; dropped: {dropped}" if dropped else ""),
            f"  {self.users:,} users, {self.items:,} items "
            f"({self.items_with_meta:,} with metadata, {self.items_with_image:,} with image)",
        ]
        if self.meta is not None:
            bad = f", {self.meta_malformed:,} malformed skipped" if self.meta_malformed else ""
            lines.append(f"  metadata: {self.meta_rows_read:,} rows read{bad}")
        return "\n".join(lines)


# Keys of DomainReport.dropped and how the summary names them.
DROP_REASONS = {
    "malformed": "malformed (skipped)",
    "below_min_rating": "below --min-rating",
    "item_in_earlier_domain": "item already in an earlier domain",
    "duplicate_user_item": "duplicate user-item pair",
    "user_too_few_domains": "user in too few domains",
}


@dataclass
class ImportReport:
    """Result of an import: where it was written and what was kept/dropped."""

    format_name: str
    out: Path
    domains: list[DomainReport]
    users: int = 0
    users_multi_domain: int = 0
    interactions: int = 0
    items: int = 0

    def format(self) -> str:
        """Human-readable summary, one block per domain then a total line."""
        blocks = [d.format() for d in self.domains]
        blocks.append(
            f"total: {self.interactions:,} interactions, {self.users:,} users "
            f"({self.users_multi_domain:,} in 2+ domains), {self.items:,} items -> {self.out}"
        )
        return "\n".join(blocks)

    def to_json(self) -> dict[str, Any]:
        """JSON-able form (written to ``import.json`` next to the CSV files)."""
        # Not dataclasses.asdict: it rebuilds the Counter from (key, value) pairs.
        domains = [{**vars(d), "dropped": dict(d.dropped)} for d in self.domains]
        return {
            "format": self.format_name,
            "out": str(self.out),
            "users": self.users,
            "users_multi_domain": self.users_multi_domain,
            "interactions": self.interactions,
            "items": self.items,
            "domains": domains,
        }


# ----------------------------------------------------------------------------- reading


def iter_lines(path: Path) -> Generator[tuple[int, bytes], None, None]:
    """Yield ``(line_number, line)`` for the non-blank lines of ``path`` (gzip or plain).

    Lines are stripped bytes: the parsers decode each line themselves, so an invalid
    UTF-8 sequence is reported with its line number (a text-mode reader decodes in
    blocks and could not say which line).
    """
    with path.open("rb") as probe:
        gzipped = probe.read(2) == b"\x1f\x8b"
    lineno = 0
    try:
        # GzipFile iterates lines through a Python-level readline; a C BufferedReader on
        # top of it is about 20% faster on large dumps.
        fh: BinaryIO
        if gzipped:
            fh = io.BufferedReader(gzip.GzipFile(path, "rb"), 1 << 20)
        else:
            fh = path.open("rb", buffering=1 << 20)
        with fh:
            for lineno, raw in enumerate(fh, 1):
                line = raw.strip()
                if lineno == 1 and line.startswith(b"\xef\xbb\xbf"):
                    line = line[3:].strip()  # UTF-8 byte-order mark of re-saved files
                if line:
                    yield lineno, line
    except (EOFError, gzip.BadGzipFile, zlib.error) as err:
        # A truncated download is the usual cause; say where reading stopped.
        raise DatasetError(path, lineno + 1, f"cannot read gzip data ({err})") from err


_JSON = json.JSONDecoder()


def parse_json_object(line: bytes) -> dict[str, Any]:
    """Parse a (stripped) line that must hold one JSON object, else :class:`MalformedLine`.

    Decoding to ``str`` ourselves and calling ``raw_decode`` is about 2.5x faster than
    ``json.loads(bytes)`` (which sniffs the encoding and decodes with ``surrogatepass``);
    on multi-GB dumps this is most of the run time.
    """
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as err:
        raise MalformedLine(f"not valid UTF-8 ({err})") from None
    try:
        obj, end = _JSON.raw_decode(text)
    except json.JSONDecodeError as err:
        # err.lineno is always 1 here; the driver reports the file's line number.
        raise MalformedLine(f"not valid JSON: {err.msg} at column {err.colno}") from None
    if end != len(text):
        raise MalformedLine(f"not valid JSON: extra data at column {end + 1}")
    if not isinstance(obj, dict):
        raise MalformedLine(f"expected a JSON object, got {type(obj).__name__}")
    return obj


def req_str(obj: dict[str, Any], key: str) -> str:
    """Field ``key`` as a non-empty string (ids are kept verbatim, only trimmed)."""
    value = obj.get(key)
    if type(value) is str:  # fast path: called twice per input line
        value = value.strip()
        if value:
            return value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)  # e.g. a numeric-looking ASIN written as a number
    raise MalformedLine(f"missing or empty {key!r}")


def to_float(value: Any, what: str) -> float:
    """A finite float from a number or numeric string, else :class:`MalformedLine`."""
    if type(value) is float and math.isfinite(value):  # fast path
        return value
    if isinstance(value, bool):
        raise MalformedLine(f"{what} is not a number: {value!r}")
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise MalformedLine(f"{what} is not a number: {value!r}") from None
    if not math.isfinite(out):
        raise MalformedLine(f"{what} is not finite: {value!r}")
    return out


def to_int(value: Any, what: str) -> int:
    """An integer from an int, an integral float or a numeric string."""
    if type(value) is int:  # fast path (excludes bool)
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)  # exact, also beyond float precision
    out = to_float(value, what)
    if out != int(out):
        raise MalformedLine(f"{what} is not an integer: {value!r}")
    return int(out)


def str_list(value: Any) -> list[str]:
    """A list of strings from a list, a single string or nothing (other types dropped)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list | tuple):
        return [v for v in value if isinstance(v, str)]
    return []


# ----------------------------------------------------------------------------- text

_SCRIPT = re.compile(r"<(script|style)\b.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
# A tag must start with a letter (or "/letter") so that plain text such as "a < b > c"
# or the category separator " > " survives.
_TAG = re.compile(r"</?[A-Za-z][^<>]*>")
_WS = re.compile(r"\s+")


def clean_text(text: str, max_chars: int | None = None) -> str:
    """Strip HTML tags/comments/scripts, decode entities, collapse whitespace, cap length."""
    if not text:
        return ""
    if "<" in text:
        text = _TAG.sub(" ", _COMMENT.sub(" ", _SCRIPT.sub(" ", text)))
    if "&" in text:
        text = html.unescape(text)
    text = _WS.sub(" ", text).strip()
    return truncate(text, max_chars) if max_chars is not None else text


def truncate(text: str, max_chars: int) -> str:
    """Cut ``text`` to at most ``max_chars`` characters, at a word boundary when one is
    near, marking the cut with ``...`` (the result never exceeds ``max_chars``)."""
    if len(text) <= max_chars:
        return text
    if max_chars <= 3:
        return text[:max_chars]
    cut = text[: max_chars - 3]
    space = cut.rfind(" ")
    if space >= (max_chars * 2) // 3:  # do not throw away a third of the budget
        cut = cut[:space]
    return cut.rstrip(" ,;:.-") + "..."


@dataclass(frozen=True, slots=True)
class ItemText:
    """The cleaned text columns of items.csv."""

    title: str = ""
    categories: str = ""
    description: str = ""


def build_item_text(meta: RawMeta, max_description_chars: int) -> ItemText:
    """Clean a :class:`RawMeta` into items.csv columns.

    ``categories`` is the category path joined as ``"A > B > C"`` followed by
    ``" | brand: X"`` (or ``store: X``) when known; empty path entries (2018 lists contain
    stray HTML) are dropped, and so is a brand equal to the last path entry.
    """
    title = clean_text(meta.title, TITLE_MAX_CHARS)
    path = [c for c in (clean_text(c, TITLE_MAX_CHARS) for c in meta.categories) if c]
    brand = clean_text(meta.brand, TITLE_MAX_CHARS)
    categories = " > ".join(path)
    if brand and (not path or brand.lower() != path[-1].lower()):
        tag = f"{meta.brand_label}: {brand}"
        categories = f"{categories} | {tag}" if categories else tag
    description = clean_text(" ".join(meta.description), max_description_chars)
    return ItemText(title, categories, description)


# ----------------------------------------------------------------------------- CLI helpers


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


# ----------------------------------------------------------------------------- driver


class _Interner:
    """String id <-> dense int code (codes in first-seen order)."""

    def __init__(self) -> None:
        self.codes: dict[str, int] = {}
        self.names: list[str] = []

    def code(self, name: str) -> int:
        c = self.codes.get(name)
        if c is None:
            c = self.codes[name] = len(self.names)
            self.names.append(name)
        return c


class _Reader:
    """Runs a line parser over a file, adding file/line to errors or counting skips."""

    def __init__(self, path: Path, skip_malformed: bool) -> None:
        self.path = path
        self.skip_malformed = skip_malformed
        self.malformed = 0

    def parsed(self, parse: Callable[[bytes, int], Any]) -> Iterator[Any]:
        for lineno, line in iter_lines(self.path):
            if lineno % _PROGRESS_EVERY == 0:
                log.info("%s: %s lines read", self.path.name, f"{lineno:,}")
            try:
                out = parse(line, lineno)
            except MalformedLine as err:
                if not self.skip_malformed:
                    raise DatasetError(self.path, lineno, str(err)) from None
                self.malformed += 1
                if self.malformed <= _MAX_MALFORMED_WARNINGS:
                    log.warning("%s:%d: skipped: %s", self.path, lineno, err)
                continue
            if out is not None:
                yield out


@dataclass
class _DomainRows:
    """A domain's kept rows as parallel numpy arrays of codes (after dedup)."""

    user: np.ndarray
    item: np.ndarray
    timestamp: np.ndarray
    rating: np.ndarray


def _check_inputs(sources: Sequence[DomainSource], out: Path, options: ImportOptions) -> None:
    """Fail before reading anything: a typo in the last domain must not cost an hour."""
    if not sources:
        raise ImporterError("no domain given (use --domain NAME=INTERACTIONS[:META])")
    names = [s.name for s in sources]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ImporterError(f"domain given more than once: {', '.join(dup)}")
    for s in sources:
        for p in (s.reviews, s.meta):
            if p is not None and not p.is_file():
                raise ImporterError(f"domain {s.name!r}: no such file: {p}")
    if options.images_dir is not None and not options.images_dir.is_dir():
        raise ImporterError(f"--images-dir: no such folder: {options.images_dir}")
    if not 1 <= options.min_user_domains <= len(sources):
        raise ImporterError(
            f"--min-user-domains must be between 1 and the number of domains ({len(sources)})"
        )
    if options.max_description_chars < 0:
        raise ImporterError("--max-description-chars must be >= 0")
    if options.min_rating is not None and not math.isfinite(options.min_rating):
        raise ImporterError("--min-rating must be a finite number")
    if out.exists() and not out.is_dir():
        raise ImporterError(f"--out exists and is not a folder: {out}")
    existing = [f for f in ("interactions.csv", "items.csv") if (out / f).exists()]
    if existing and not options.overwrite:
        raise ImporterError(f"{out} already holds {', '.join(existing)} (pass --overwrite)")


def _read_domain(
    fmt: FormatSpec,
    d: int,
    source: DomainSource,
    report: DomainReport,
    users: _Interner,
    items: _Interner,
    item_domain: array[int],
    options: ImportOptions,
) -> _DomainRows:
    """Stream one interaction file; return its rows after the per-row filters and dedup."""
    u_col, i_col, t_col = array("q"), array("q"), array("q")
    r_col = array("d")
    reader = _Reader(source.reviews, options.skip_malformed)
    # This loop runs once per input line (tens of millions on a big category): plain
    # locals and integer counters, no Counter updates or attribute lookups inside.
    min_rating = -math.inf if options.min_rating is None else options.min_rating
    item_codes, item_names = items.codes, items.names
    user_code = users.code
    n_read = n_low = n_taken = 0
    for user, item, timestamp, rating in reader.parsed(fmt.review_parser(source.reviews)):
        n_read += 1
        if rating < min_rating:
            n_low += 1
            continue
        ic = item_codes.get(item)
        if ic is None:
            ic = item_codes[item] = len(item_names)
            item_names.append(item)
            item_domain.append(d)
        elif item_domain[ic] != d:
            # Item ids must be unique across the dataset: the first domain keeps it.
            n_taken += 1
            continue
        u_col.append(user_code(user))
        i_col.append(ic)
        t_col.append(timestamp)
        r_col.append(rating)
    report.rows_read = n_read + reader.malformed
    dropped = report.dropped
    for key, n in (
        ("malformed", reader.malformed),
        ("below_min_rating", n_low),
        ("item_in_earlier_domain", n_taken),
    ):
        if n:
            dropped[key] += n

    user = np.frombuffer(u_col, dtype=np.int64) if u_col else np.zeros(0, np.int64)
    item = np.frombuffer(i_col, dtype=np.int64) if i_col else np.zeros(0, np.int64)
    ts = np.frombuffer(t_col, dtype=np.int64) if t_col else np.zeros(0, np.int64)
    rating = np.frombuffer(r_col, dtype=np.float64) if r_col else np.zeros(0, np.float64)
    # Keep the earliest row of each (user, item); ties keep the first in file order
    # (the row index is the last sort key). Kept rows stay in file order.
    order = np.lexsort((np.arange(len(user)), ts, item, user))
    su, si = user[order], item[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = (su[1:] != su[:-1]) | (si[1:] != si[:-1])
    keep = np.sort(order[first])
    if len(keep) < len(user):
        dropped["duplicate_user_item"] += len(user) - len(keep)
    return _DomainRows(user[keep], item[keep], ts[keep], rating[keep])


def _filter_users_by_domains(
    rows: list[_DomainRows], reports: list[DomainReport], min_domains: int, n_users: int
) -> None:
    """Drop (in place) the rows of users active in fewer than ``min_domains`` domains."""
    count = np.zeros(n_users, dtype=np.int64)
    for r in rows:
        count[np.unique(r.user)] += 1
    ok = count >= min_domains
    for i, r in enumerate(rows):
        mask = ok[r.user]
        n_drop = int((~mask).sum())
        if n_drop:
            reports[i].dropped["user_too_few_domains"] += n_drop
            rows[i] = _DomainRows(r.user[mask], r.item[mask], r.timestamp[mask], r.rating[mask])


def _read_meta(
    fmt: FormatSpec,
    path: Path,
    wanted: dict[str, int],
    report: DomainReport,
    options: ImportOptions,
) -> dict[str, ItemText]:
    """Stream a metadata file; keep the cleaned text of the ``wanted`` ids (first row wins;
    2018 files repeat some ASINs)."""
    texts: dict[str, ItemText] = {}
    reader = _Reader(path, options.skip_malformed)
    for meta in reader.parsed(fmt.meta_parser(path)):
        report.meta_rows_read += 1
        if meta.item_id in wanted and meta.item_id not in texts:
            texts[meta.item_id] = build_item_text(meta, options.max_description_chars)
    report.meta_rows_read += reader.malformed
    report.meta_malformed = reader.malformed
    return texts


def _index_images(images_dir: Path) -> dict[str, Path]:
    """``{item_id: file}`` for the image files in ``images_dir`` (one directory scan,
    instead of several ``stat`` calls per item)."""
    rank = {ext: i for i, ext in enumerate(IMAGE_EXTENSIONS)}
    found: dict[str, tuple[int, Path]] = {}
    with os.scandir(images_dir) as it:
        for entry in it:
            stem, ext = os.path.splitext(entry.name)
            r = rank.get(ext.lower())
            if r is None or not stem or not entry.is_file():
                continue
            if stem not in found or r < found[stem][0]:
                found[stem] = (r, Path(entry.path))
    return {stem: p for stem, (_, p) in found.items()}


def _fmt_rating(x: float) -> str:
    return f"{x:g}"


def run_import(
    fmt: FormatSpec,
    sources: Sequence[DomainSource],
    out: str | Path,
    options: ImportOptions | None = None,
) -> ImportReport:
    """Import ``sources`` (one per domain, in priority order) into the folder ``out``.

    Raises :class:`ImporterError` for bad arguments (checked before any reading) and
    :class:`~model.data.dataset.DatasetError` for a malformed input line.
    """
    options = options or ImportOptions()
    out = Path(out)
    _check_inputs(sources, out, options)

    users, items = _Interner(), _Interner()
    item_domain: array[int] = array("i")  # item code -> index of the domain that owns it
    reports = [
        DomainReport(s.name, str(s.reviews), None if s.meta is None else str(s.meta))
        for s in sources
    ]
    rows: list[_DomainRows] = []
    for d, source in enumerate(sources):
        log.info("%s: reading %s", source.name, source.reviews)
        rows.append(_read_domain(fmt, d, source, reports[d], users, items, item_domain, options))
    if options.min_user_domains > 1:
        _filter_users_by_domains(rows, reports, options.min_user_domains, len(users.names))

    # Items of each domain in order of first kept interaction.
    domain_items: list[np.ndarray] = []
    for r, rep in zip(rows, reports, strict=True):
        uniq, first = np.unique(r.item, return_index=True)
        domain_items.append(uniq[np.argsort(first, kind="stable")])
        rep.kept, rep.users, rep.items = len(r.user), len(np.unique(r.user)), len(uniq)
        if rep.kept == 0:
            log.warning("domain %r has no interactions left after filtering", rep.name)

    total = sum(rep.kept for rep in reports)
    if total == 0:
        raise ImporterError("no interactions left after filtering:\n" + _summary(reports))

    images = _index_images(options.images_dir) if options.images_dir is not None else {}
    out.mkdir(parents=True, exist_ok=True)
    image_out = out / "images"

    item_rows: list[tuple[str, ...]] = []
    for source, rep, codes in zip(sources, reports, domain_items, strict=True):
        wanted = {items.names[c]: c for c in codes.tolist()}
        texts: dict[str, ItemText] = {}
        if source.meta is not None:
            log.info("%s: reading %s", source.name, source.meta)
            texts = _read_meta(fmt, source.meta, wanted, rep, options)
        rep.items_with_meta = len(texts)
        for item_id in wanted:
            text = texts.get(item_id, ItemText())
            image = ""
            src = images.get(item_id)
            if src is not None:
                image_out.mkdir(exist_ok=True)
                dest = image_out / f"{item_id}{src.suffix.lower()}"
                shutil.copyfile(src, dest)
                image = f"images/{dest.name}"  # relative to the dataset folder
                rep.items_with_image += 1
            item_rows.append(
                (item_id, source.name, text.title, text.categories, text.description, image)
            )

    _write_csv(out / "items.csv", ITEMS_HEADER, item_rows)
    _write_csv(
        out / "interactions.csv",
        INTERACTIONS_HEADER,
        _interaction_rows(sources, rows, users.names, items.names),
    )

    per_user = np.zeros(len(users.names), dtype=np.int64)
    for r in rows:
        per_user[np.unique(r.user)] += 1
    report = ImportReport(
        format_name=fmt.name,
        out=out,
        domains=reports,
        users=int((per_user > 0).sum()),
        users_multi_domain=int((per_user > 1).sum()),
        interactions=total,
        items=len(item_rows),
    )
    (out / "import.json").write_text(
        json.dumps({**report.to_json(), "options": _options_json(options)}, indent=2) + "\n"
    )
    return report


def _summary(reports: list[DomainReport]) -> str:
    return "\n".join(r.format() for r in reports)


def _options_json(options: ImportOptions) -> dict[str, Any]:
    data = asdict(options)
    data["images_dir"] = None if options.images_dir is None else str(options.images_dir)
    return data


def _interaction_rows(
    sources: Sequence[DomainSource],
    rows: list[_DomainRows],
    user_names: list[str],
    item_names: list[str],
) -> Iterator[tuple[str, ...]]:
    for source, r in zip(sources, rows, strict=True):
        for u, i, t, x in zip(
            r.user.tolist(), r.item.tolist(), r.timestamp.tolist(), r.rating.tolist(), strict=True
        ):
            yield (user_names[u], item_names[i], source.name, str(t), _fmt_rating(x))


def _write_csv(path: Path, header: Sequence[str], rows: Any) -> None:
    """Write atomically (temp file + rename): an interrupted import leaves no half file."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    os.replace(tmp, path)
