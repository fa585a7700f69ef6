"""The import driver shared by the raw-dump importers: :func:`run_import`.

A format module (:mod:`.amazon2023`, :mod:`.amazon2018`) only knows how to turn *one
line* of its interaction file into a :class:`~.base.Review` and one line of its
metadata file into a :class:`~.base.RawMeta` (see :mod:`.base`). Everything else is
shared so that every format behaves the same:

* streaming, line-by-line reads with transparent gzip (detected by magic bytes, not by
  file name), so multi-GB dumps never have to fit in memory as text (:mod:`.lines`);
* errors that name the file and line (:class:`~model.data.dataset.DatasetError`), or,
  with ``skip_malformed``, a count and a few warnings instead;
* the multi-domain merge: users are matched across domains by their raw reviewer id, an
  item id keeps the domain where it was first seen (domains in the order given) and its
  rows in later domains are dropped and counted, (user, item) pairs are de-duplicated
  keeping the earliest row, an optional rating threshold and minimum number of domains
  per user;
* item text cleaning (HTML stripped, entities decoded, whitespace collapsed, length
  capped; :mod:`.text`) and optional *local* images (never fetched over the network);
* writing ``interactions.csv`` / ``items.csv`` in the project format
  (``../shared/datasets/README.md``) plus ``import.json`` (provenance and counts;
  :mod:`.report`).

Memory: rows are kept as integer codes in compact arrays (about 32 bytes per kept row)
plus one dict entry per distinct user and item id; the metadata file is streamed after
the interactions and only the items that survived are kept.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import shutil
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from model.data.dataset import DatasetError
from model.data.importers.base import (
    IMAGE_EXTENSIONS,
    DomainSource,
    FormatSpec,
    ImporterError,
    ImportOptions,
    MalformedLine,
)
from model.data.importers.lines import iter_lines
from model.data.importers.report import DomainReport, ImportReport
from model.data.importers.text import ItemText, build_item_text

log = logging.getLogger(__name__)

INTERACTIONS_HEADER = ("user_id", "item_id", "domain", "timestamp", "rating")
ITEMS_HEADER = ("item_id", "domain", "title", "categories", "description", "image")

_PROGRESS_EVERY = 1_000_000
_MAX_MALFORMED_WARNINGS = 5


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
