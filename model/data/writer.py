"""Writing a dataset folder in the project format row by row, and reading a bundle's
training data back (what ``micrec export`` starts from; the store side is app/learning/export.py).

Written files: ``items.csv`` (``item_id,domain,title,categories,description,image,source``)
and ``interactions.csv`` (``user_id,item_id,domain,timestamp,source``); ``source`` is
``bundle`` or ``store`` (an extra column: the loader ignores it, the next export reads it,
see :func:`bundle_training_data`). An optional ``holdout.csv`` with the interactions
header holds rows kept out of training (``micrec retrain``'s evaluation window); the
loader does not read it, the next export does. Image paths are written relative to the
folder, pointing at the image where it already is (no copy).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from model.bundle import read_manifest
from model.data.dataset import DatasetError, ItemRecord
from model.data.ids import normalise_id
from model.data.loading import INTERACTIONS_FILE, ITEMS_FILE, _parse_timestamp, _rows
from model.fsio import fsync_dir, fsync_tree

INTERACTION_HEADER = ("user_id", "item_id", "domain", "timestamp", "source")
ITEM_HEADER = ("item_id", "domain", "title", "categories", "description", "image", "source")
HOLDOUT_FILE = "holdout.csv"
META_FILE = "export.json"
STORE, BUNDLE = "store", "bundle"


@dataclass(frozen=True)
class Row:
    """One interaction row as exported (``timestamp``: integer unix seconds)."""

    user_id: str
    item_id: str
    domain: str
    timestamp: int
    source: str


class DatasetWriter:
    """Streams a dataset folder into a hidden temporary folder next to ``out``;
    :meth:`commit` renames it into place, so a reader never sees a half-written dataset.

    Items come first: :meth:`add_row` checks each row's item and domain against them (a
    row for an item no longer registered is skipped, the loader would refuse it).
    """

    def __init__(self, out: Path, *, replace: bool = False) -> None:
        self.out = Path(out)
        if self.out.exists() and any(self.out.iterdir()) and not replace:
            raise FileExistsError(f"{self.out} exists and is not empty (use --force to replace)")
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.out.name}-", dir=self.out.parent))
        self.item_domain: dict[str, str] = {}
        self.counts: dict[str, int] = {}
        self._files: list[TextIO] = []
        self._items = self._open(ITEMS_FILE, ITEM_HEADER)
        self._rows = self._open(INTERACTIONS_FILE, INTERACTION_HEADER)
        self._holdout: Any = None

    def _open(self, name: str, header: tuple[str, ...]) -> Any:
        f = open(self.tmp / name, "w", encoding="utf-8", newline="")  # noqa: SIM115 - closed in close()
        self._files.append(f)
        w = csv.writer(f)
        w.writerow(header)
        return w

    def _count(self, key: str) -> None:
        self.counts[key] = self.counts.get(key, 0) + 1

    def add_item(self, rec: ItemRecord, source: str) -> bool:
        """Write ``rec`` unless an item of that id was written already (False)."""
        if rec.item_id in self.item_domain:
            return False
        image = ""
        if rec.image is not None:
            image = os.path.relpath(Path(rec.image).resolve(), self.out.resolve())
        self._items.writerow(
            (rec.item_id, rec.domain, rec.title, rec.categories, rec.description, image, source)
        )
        self.item_domain[rec.item_id] = rec.domain
        self._count(f"items_{source}")
        return True

    def add_row(self, row: Row, *, holdout: bool = False) -> bool:
        """Write ``row`` (to holdout.csv with ``holdout``); False (skipped, counted) when its
        item is unknown or in another domain."""
        if self.item_domain.get(row.item_id) != row.domain:
            self._count("rows_skipped_unknown_item")
            return False
        if holdout and self._holdout is None:
            self._holdout = self._open(HOLDOUT_FILE, INTERACTION_HEADER)
        w = self._holdout if holdout else self._rows
        w.writerow((row.user_id, row.item_id, row.domain, row.timestamp, row.source))
        self._count(f"rows_{row.source}" + ("_holdout" if holdout else ""))
        return True

    def _close(self) -> None:
        for f in self._files:
            f.close()

    def commit(self, meta: dict[str, Any]) -> Path:
        """Close the files, write export.json (``meta`` + the counts), move into place."""
        self._close()
        if not self.item_domain:
            self.abort()
            raise DatasetError(self.out, None, "nothing to export: no item")
        doc = {**meta, "counts": dict(sorted(self.counts.items()))}
        (self.tmp / META_FILE).write_text(json.dumps(doc, indent=1, default=str))
        fsync_tree(self.tmp)  # complete on disk before it is visible under its name
        if self.out.exists():
            shutil.rmtree(self.out)
        os.replace(self.tmp, self.out)
        fsync_dir(self.out.parent)
        return self.out

    def abort(self) -> None:
        self._close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def read_items(root: Path) -> Iterator[tuple[ItemRecord, str]]:
    """(record, source) of every row of ``root``/items.csv; image paths made absolute;
    source "" when the file has no ``source`` column."""
    cols, rows = _rows(root / ITEMS_FILE, ("item_id", "domain", "title", "categories"))
    c_desc, c_img, c_src = cols.get("description"), cols.get("image"), cols.get("source")
    for _, r in rows:
        image = r[c_img].strip() if c_img is not None else ""
        rec = ItemRecord(
            item_id=normalise_id(r[cols["item_id"]]),
            domain=normalise_id(r[cols["domain"]]),
            title=r[cols["title"]],
            categories=r[cols["categories"]],
            description=r[c_desc] if c_desc is not None else "",
            image=(root / image).resolve() if image else None,
        )
        yield rec, (r[c_src] if c_src is not None else "")


@dataclass
class TrainingData:
    """A bundle's training data, streamed: from its dataset folder when that is still
    there and unchanged (every row, timestamps when the folder has them), else from the
    bundle's own serving histories (training-input pairs only, no timestamps)."""

    description: str
    fallback_time: int
    """Timestamp given to rows that have none: the bundle's creation time (they are at
    least that old)."""
    root: Path | None = None
    bundle_dir: Path | None = None
    min_rating: float | None = None

    def items(self) -> Iterator[ItemRecord]:
        """Every item, except ``source=store`` items of an earlier export (the store is
        their source of truth: a deleted one must not come back)."""
        if self.root is not None:
            yield from (rec for rec, src in read_items(self.root) if src != STORE)
            return
        assert self.bundle_dir is not None
        cat = json.loads((self.bundle_dir / "catalogue.json").read_text())
        for d, c in cat.items():
            for item_id, title, cats in zip(
                c["item_ids"], c["titles"], c["categories"], strict=True
            ):
                yield ItemRecord(normalise_id(item_id), d, title=title, categories=cats)

    def rows(self) -> Iterator[Row]:
        """Every row, except ``source=store`` rows of an earlier export (the store is their
        source of truth and is read again) and rows below the run's ``min_rating``."""
        if self.root is None:
            yield from self._bundle_rows()
            return
        for name in (INTERACTIONS_FILE, HOLDOUT_FILE):
            if name == HOLDOUT_FILE and not (self.root / name).is_file():
                continue
            cols, rows = _rows(self.root / name, ("user_id", "item_id", "domain"))
            c_ts, c_src, c_rating = cols.get("timestamp"), cols.get("source"), cols.get("rating")
            for _, r in rows:
                if c_src is not None and r[c_src] == STORE:
                    continue
                low = self.min_rating is not None and c_rating is not None
                if low and float(r[c_rating]) < self.min_rating:  # type: ignore[index,operator]
                    continue
                ts = self.fallback_time if c_ts is None else _parse_timestamp(r[c_ts].strip())
                yield Row(
                    normalise_id(r[cols["user_id"]]),
                    normalise_id(r[cols["item_id"]]),
                    normalise_id(r[cols["domain"]]),
                    ts,
                    BUNDLE,
                )

    def trained_until(self) -> int:
        """The newest timestamp the bundle was trained on: the cutoff of a retrain's
        training folder, else the dataset's newest row, else the bundle's creation time."""
        if self.root is None:
            return self.fallback_time
        meta = self.root / META_FILE
        if meta.is_file():
            cutoff = json.loads(meta.read_text()).get("cutoff")
            if cutoff is not None:
                return int(cutoff)
        cols, rows = _rows(self.root / INTERACTIONS_FILE, ("user_id", "item_id", "domain"))
        c_ts = cols.get("timestamp")
        if c_ts is None:
            return self.fallback_time
        return max((_parse_timestamp(r[c_ts].strip()) for _, r in rows), default=0)

    def _bundle_rows(self) -> Iterator[Row]:
        from safetensors.torch import load_file

        assert self.bundle_dir is not None
        manifest = read_manifest(self.bundle_dir)
        cat = json.loads((self.bundle_dir / "catalogue.json").read_text())
        for d in manifest["domains"]:
            t = load_file(str(self.bundle_dir / manifest["domain_files"][d]))
            ptr, items = t["history_ptr"].numpy(), t["history_items"].numpy()
            # ids in normal form, as a bundle trained now has them (older ones may not)
            users = [normalise_id(u) for u in cat[d]["user_ids"]]
            item_ids = [normalise_id(i) for i in cat[d]["item_ids"]]
            for u, user in enumerate(users):
                for i in items[ptr[u] : ptr[u + 1]]:
                    yield Row(user, item_ids[int(i)], d, self.fallback_time, BUNDLE)


def bundle_training_data(bundle_dir: Path) -> TrainingData:
    """Where ``bundle_dir``'s training data can be read from (see :class:`TrainingData`)."""
    import calendar
    import time

    from model.pipeline import data_fingerprint

    bundle_dir = Path(bundle_dir)
    manifest = read_manifest(bundle_dir)
    created = manifest.get("created_at")
    fallback = (
        calendar.timegm(time.strptime(created, "%Y-%m-%dT%H:%M:%SZ"))
        if created
        else int((bundle_dir / "manifest.json").stat().st_mtime)
    )
    data = manifest.get("data") or {}
    min_rating = ((data.get("run_config") or {}).get("data") or {}).get("min_rating")
    root = Path(data["dataset"]) if data.get("dataset") else None
    usable = root is not None and (root / INTERACTIONS_FILE).is_file()
    if usable and data_fingerprint(root, data.get("split_config", {})) == data.get("fingerprint"):  # type: ignore[arg-type]
        return TrainingData(f"dataset {root}", fallback, root=root, min_rating=min_rating)
    return TrainingData(
        f"bundle histories of {bundle_dir} (dataset folder {root} missing or changed: "
        "training-input pairs only, no timestamps)",
        fallback,
        bundle_dir=bundle_dir,
    )
