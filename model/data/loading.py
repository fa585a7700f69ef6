"""Load and validate a dataset folder in the project's CSV format.

``interactions.csv``: header ``user_id,item_id,domain`` plus optional ``timestamp``
(integer unix seconds) and ``rating`` (number). ``items.csv``: header
``item_id,domain,title,categories`` plus optional ``description`` and ``image`` (a path
relative to the dataset folder). Extra columns are ignored so that richer exports still
load. Files are read with the ``csv`` module (quoted fields, embedded commas and newlines
are fine) as UTF-8, a leading byte-order mark tolerated.

Ids and domains are read in the service's normal form (``normalise_id``: NFKC, trimmed),
so every id of a bundle trained from them is reachable through the API, which normalises
the ids requests carry the same way.

Every problem a user can fix raises :class:`~model.data.dataset.DatasetError` whose
message is one line ``<file>:<line>: <problem>``; the loader stops at the first problem
rather than guessing what a malformed row meant.
"""

from __future__ import annotations

import csv
import logging
import math
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from model.data.dataset import Dataset, DatasetError, Interactions, ItemRecord
from model.data.filtering import filter_min_rating
from model.data.ids import normalise_id

log = logging.getLogger(__name__)

INTERACTIONS_FILE = "interactions.csv"
ITEMS_FILE = "items.csv"
INTERACTION_COLUMNS = ("user_id", "item_id", "domain")
INTERACTION_OPTIONAL = ("timestamp", "rating")
ITEM_COLUMNS = ("item_id", "domain", "title", "categories")
ITEM_OPTIONAL = ("description", "image")


def _rows(
    path: Path, required: tuple[str, ...]
) -> tuple[dict[str, int], Iterator[tuple[int, list[str]]]]:
    """Open ``path``; return (column -> index, iterator of (first line number, fields)).

    The header is checked here (required columns present, no duplicate names). Rows are
    checked for their field count; blank lines are skipped. Line numbers are 1-based
    physical lines of the row's *first* line (a quoted field may span several lines).
    """
    if not path.is_file():
        raise DatasetError(path, None, "missing file" if not path.exists() else "not a file")
    try:
        f = open(path, encoding="utf-8-sig", newline="")  # noqa: SIM115 - closed by the generator
    except OSError as err:
        raise DatasetError(path, None, f"cannot read: {err.strerror or err}") from err
    reader = csv.reader(f, strict=True)
    try:
        header = next(reader, None)
    except (csv.Error, UnicodeDecodeError) as err:
        f.close()
        raise DatasetError(path, 1, f"unreadable header: {err}") from err
    if header is None:
        f.close()
        raise DatasetError(path, None, "empty file (no header)")
    names = [h.strip() for h in header]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        f.close()
        raise DatasetError(path, 1, f"duplicate column(s) in header: {', '.join(dupes)}")
    missing = [c for c in required if c not in names]
    if missing:
        f.close()
        raise DatasetError(
            path,
            1,
            f"missing required column(s): {', '.join(missing)} "
            f"(header has: {', '.join(names) or 'nothing'})",
        )
    columns = {n: i for i, n in enumerate(names)}
    width = len(names)

    def gen() -> Iterator[tuple[int, list[str]]]:
        with f:
            prev = reader.line_num
            while True:
                try:
                    row = next(reader)
                except StopIteration:
                    return
                except csv.Error as err:
                    raise DatasetError(path, prev + 1, f"bad line: {err}") from err
                except UnicodeDecodeError as err:
                    raise DatasetError(path, None, f"not valid UTF-8: {err}") from err
                start, prev = prev + 1, reader.line_num
                if not row:  # blank line (e.g. a trailing newline): not a record
                    continue
                if len(row) != width:
                    raise DatasetError(
                        path, start, f"bad line: {len(row)} fields, header has {width}"
                    )
                yield start, row

    return columns, gen()


def _load_items(root: Path) -> tuple[dict[str, ItemRecord], dict[str, int]]:
    """Parse items.csv. Returns (item_id -> record in file order, item_id -> line)."""
    path = root / ITEMS_FILE
    cols, rows = _rows(path, ITEM_COLUMNS)
    c_id, c_dom, c_title, c_cat = (cols[c] for c in ITEM_COLUMNS)
    c_desc, c_img = cols.get("description"), cols.get("image")
    items: dict[str, ItemRecord] = {}
    lines: dict[str, int] = {}
    for line, row in rows:
        item_id, domain = normalise_id(row[c_id]), normalise_id(row[c_dom])
        if not item_id:
            raise DatasetError(path, line, "empty item_id")
        if not domain:
            raise DatasetError(path, line, f"empty domain for item {item_id!r}")
        if item_id in items:
            first = items[item_id]
            if first.domain != domain:
                raise DatasetError(
                    path,
                    line,
                    f"item {item_id!r} is listed in two domains: {first.domain!r} "
                    f"(line {lines[item_id]}) and {domain!r}; item ids must be unique "
                    "across the dataset",
                )
            raise DatasetError(
                path, line, f"item {item_id!r} is listed twice (first at line {lines[item_id]})"
            )
        image: Path | None = None
        raw_img = row[c_img].strip() if c_img is not None else ""
        if raw_img:
            image = (root / raw_img).resolve()
            if not image.is_file():
                raise DatasetError(
                    path, line, f"image {raw_img!r} of item {item_id!r} does not exist"
                )
            if not os.access(image, os.R_OK):
                raise DatasetError(
                    path, line, f"image {raw_img!r} of item {item_id!r} is not readable"
                )
        items[item_id] = ItemRecord(
            item_id=item_id,
            domain=domain,
            title=row[c_title],
            categories=row[c_cat],
            description=row[c_desc] if c_desc is not None else "",
            image=image,
        )
        lines[item_id] = line
    return items, lines


def _parse_timestamp(value: str) -> int:
    """Integer unix seconds; "1.5e9"-style integral floats are accepted, others raise."""
    try:
        return int(value)
    except ValueError:
        f = float(value)  # ValueError propagates for non-numbers
        if not f.is_integer():
            raise ValueError(value) from None
        return int(f)


def load_dataset(path: str | Path, *, min_rating: float | None = None) -> Dataset:
    """Load and validate the dataset folder ``path``.

    Returns a :class:`Dataset` whose ``interactions`` hold one row per distinct
    (user, item) pair (the first occurrence wins: its timestamp and rating are kept;
    item ids are unique across domains, so this is de-duplication per domain), in file
    order. With ``min_rating`` only pairs whose (first) rating is ``>= min_rating`` are
    kept; it needs the ``rating`` column. De-duplication happens *before* the rating
    filter so that filtering a loaded dataset later gives the same rows.

    Raises :class:`DatasetError` (one-line message naming file and line) for: a missing
    folder or file, missing required columns, a row with the wrong number of fields,
    empty ids or domain, an item listed twice or in two domains, an interaction whose item
    is not in items.csv or whose domain differs from the item's, a non-numeric timestamp
    or rating, and an image path that does not exist or cannot be read.
    """
    root = Path(path)
    if not root.is_dir():
        raise DatasetError(
            root, None, "no such dataset folder" if not root.exists() else "not a folder"
        )
    root = root.resolve()
    items, _ = _load_items(root)

    ipath = root / INTERACTIONS_FILE
    cols, rows = _rows(ipath, INTERACTION_COLUMNS)
    c_user, c_item, c_dom = (cols[c] for c in INTERACTION_COLUMNS)
    c_ts, c_rating = cols.get("timestamp"), cols.get("rating")
    if min_rating is not None and c_rating is None:
        raise DatasetError(ipath, 1, "min_rating was given but there is no rating column")

    users: list[str] = []
    item_col: list[str] = []
    domains: list[str] = []
    stamps: list[int] = []
    ratings: list[float] = []
    seen: set[tuple[str, str]] = set()
    n_rows = 0
    for line, row in rows:
        n_rows += 1
        user, item, domain = (normalise_id(row[c]) for c in (c_user, c_item, c_dom))
        if not user:
            raise DatasetError(ipath, line, "empty user_id")
        if not item:
            raise DatasetError(ipath, line, "empty item_id")
        if not domain:
            raise DatasetError(ipath, line, "empty domain")
        rec = items.get(item)
        if rec is None:
            raise DatasetError(ipath, line, f"item {item!r} is not in {ITEMS_FILE}")
        if rec.domain != domain:
            raise DatasetError(
                ipath,
                line,
                f"interaction domain {domain!r} differs from item {item!r}'s domain "
                f"{rec.domain!r} in {ITEMS_FILE}",
            )
        # Parse before de-duplicating so that a bad value is reported even on a duplicate.
        if c_ts is not None:
            try:
                ts = _parse_timestamp(row[c_ts].strip())
            except (ValueError, OverflowError):
                raise DatasetError(
                    ipath, line, f"timestamp {row[c_ts]!r} is not an integer"
                ) from None
        if c_rating is not None:
            try:
                rating = float(row[c_rating])
            except ValueError:
                raise DatasetError(
                    ipath, line, f"rating {row[c_rating]!r} is not a number"
                ) from None
            if not math.isfinite(rating):
                raise DatasetError(ipath, line, f"rating {row[c_rating]!r} is not finite")
        key = (user, item)
        if key in seen:
            continue
        seen.add(key)
        users.append(user)
        item_col.append(item)
        domains.append(domain)
        if c_ts is not None:
            stamps.append(ts)
        if c_rating is not None:
            ratings.append(rating)

    inter = Interactions(
        user=_obj(users),
        item=_obj(item_col),
        domain=_obj(domains),
        timestamp=np.asarray(stamps, dtype=np.int64) if c_ts is not None else None,
        rating=np.asarray(ratings, dtype=np.float32) if c_rating is not None else None,
    )
    if n_rows > len(inter):
        log.info("%s: dropped %d duplicate (user, item) rows", ipath, n_rows - len(inter))
    if min_rating is not None:
        inter = filter_min_rating(inter, min_rating)
    return Dataset(root=root, items=items, interactions=inter, name=root.name)


def _obj(values: list[str]) -> np.ndarray:
    """1-D numpy object array of ``str`` (np.asarray would make a fixed-width unicode array)."""
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out
