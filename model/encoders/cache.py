"""On-disk feature cache: encode each item's content once per encoder.

Layout, one folder per encoder under ``cache_dir``::

    <encoder name>/index.json          {"encoder", "modality", "dim", "rows", "vectors",
                                        "items": {item_id: [sha256 of content, row]}}
    <encoder name>/vectors-<token>.npy float32 [rows, dim], read with allow_pickle=False

A cached vector is reused only when the item id *and* the sha256 of its content (the text
string ``ItemRecord.text()``, or the image file's bytes) match, so editing a title
re-encodes exactly that item. Row ``-1`` records content the encoder could not read (a
corrupt image): it stays a missing modality until the bytes change.

Writes are crash-safe without locks: a new vectors file is written under a fresh name
(tmp + ``os.replace``), then ``index.json`` is replaced the same way; that second rename is
the commit point, so a reader always sees an index and the matrix it names. Concurrent
writers do not corrupt anything; the last one to commit wins.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from model.data.dataset import Dataset, ItemRecord
from model.encoders.base import MODALITIES, ContentEncoder, ItemFeatures, ModalityFeatures
from model.fsio import atomic_write

log = logging.getLogger(__name__)

INDEX_FORMAT = 1
FAILED = -1
"""Row of content that could not be encoded (e.g. an unreadable image file)."""


class FeatureCacheError(FileNotFoundError):
    """Features are absent, stale or unreadable in the cache (one-line message for the CLI)."""


# --- content ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Content:
    """What one encoder sees of one item: ``payload`` (text or image path) + its sha256."""

    item_id: str
    sha256: str
    payload: Any


def item_content(rec: ItemRecord, modality: str) -> Content | str | None:
    """``Content``, ``None`` when the item lacks the modality, or an error string.

    An error string means the content is referenced but unreadable (image file missing);
    the item is then treated as missing that modality.
    """
    if modality == "text":
        text = rec.text()
        if not text:
            return None
        return Content(rec.item_id, hashlib.sha256(text.encode("utf-8")).hexdigest(), text)
    if modality == "image":
        if rec.image is None:
            return None
        try:
            data = Path(rec.image).read_bytes()
        except OSError as err:
            return f"{rec.image}: {err.strerror or err}"
        return Content(rec.item_id, hashlib.sha256(data).hexdigest(), Path(rec.image))
    raise ValueError(f"unknown modality {modality!r} (expected one of {MODALITIES})")


# --- storage ----------------------------------------------------------------------------


def _safe_dirname(name: str) -> str:
    """A folder name for an encoder name (its real name is kept inside index.json)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", name) or "_"


class EncoderStore:
    """Cached vectors of one encoder: ``(item_id, sha256) -> row`` plus the ``[rows, dim]`` matrix.

    Loaded fully into memory; changes stay in memory until ``flush()``.
    """

    def __init__(self, folder: Path, encoder: str, modality: str, dim: int) -> None:
        self.folder = folder
        self.encoder = encoder
        self.modality = modality
        self.dim = dim
        self.items: dict[str, tuple[str, int]] = {}
        self._blocks: list[np.ndarray] = []  # [k, dim] pieces; concatenated lazily
        self._rows = 0
        self._vectors_file: str | None = None
        self._dirty = False

    # -- reading
    @classmethod
    def read(cls, folder: Path) -> EncoderStore:
        """The store in ``folder``; ``FeatureCacheError`` if it is absent or inconsistent."""
        index_path = folder / "index.json"
        for attempt in range(2):  # a concurrent writer may delete the matrix we were about to read
            try:
                meta = json.loads(index_path.read_text(encoding="utf-8"))
                vec_path = folder / str(meta["vectors"])
                vectors = np.load(vec_path, allow_pickle=False) if meta["rows"] else None
                break
            except FileNotFoundError as err:
                if attempt == 0 and index_path.is_file():
                    continue
                raise FeatureCacheError(
                    f"feature cache {folder} is missing {err.filename}"
                ) from None
            except (ValueError, KeyError, OSError) as err:
                raise FeatureCacheError(
                    f"feature cache {folder} is unreadable ({err}); delete the folder to rebuild it"
                ) from None
        if meta.get("format") != INDEX_FORMAT:
            raise FeatureCacheError(f"{index_path}: unsupported format {meta.get('format')!r}")
        store = cls(folder, str(meta["encoder"]), str(meta["modality"]), int(meta["dim"]))
        rows = int(meta["rows"])
        if vectors is not None:
            if vectors.dtype != np.float32 or vectors.shape != (rows, store.dim):
                raise FeatureCacheError(
                    f"{vec_path}: expected float32 [{rows}, {store.dim}], got "
                    f"{vectors.dtype} {list(vectors.shape)}; delete {folder} to rebuild it"
                )
            store._blocks = [vectors]
        store._rows = rows
        store._vectors_file = str(meta["vectors"])
        store.items = {iid: (str(sha), int(row)) for iid, (sha, row) in meta["items"].items()}
        return store

    def lookup(self, item_id: str, sha256: str) -> int | None:
        """Row cached for ``item_id`` with exactly this content (``FAILED``: unreadable) or None."""
        hit = self.items.get(item_id)
        return hit[1] if hit is not None and hit[0] == sha256 else None

    @property
    def vectors(self) -> np.ndarray:
        """All cached vectors, float32 ``[rows, dim]``."""
        if len(self._blocks) != 1:
            blocks = self._blocks or [np.zeros((0, self.dim), dtype=np.float32)]
            self._blocks = [np.concatenate(blocks, axis=0)]
        return self._blocks[0]

    # -- writing
    def put(self, contents: Sequence[Content], vectors: np.ndarray) -> None:
        """Store ``vectors[k]`` (float32 ``[len(contents), dim]``) for ``contents[k]``."""
        if vectors.shape != (len(contents), self.dim):
            raise ValueError(
                f"expected [{len(contents)}, {self.dim}] vectors, got {list(vectors.shape)}"
            )
        fresh: list[int] = []
        for k, c in enumerate(contents):
            old = self.items.get(c.item_id)
            if old is not None and old[1] != FAILED:
                # Changed content: overwrite the item's row in place, the matrix does not grow.
                self.vectors[old[1]] = vectors[k]
                self.items[c.item_id] = (c.sha256, old[1])
            else:
                self.items[c.item_id] = (c.sha256, self._rows + len(fresh))
                fresh.append(k)
        if fresh:
            self._blocks.append(np.ascontiguousarray(vectors[fresh], dtype=np.float32))
            self._rows += len(fresh)
        self._dirty = True

    def mark_failed(self, content: Content) -> None:
        """Remember that ``content`` cannot be encoded (its old row, if any, is left unused)."""
        self.items[content.item_id] = (content.sha256, FAILED)
        self._dirty = True

    def flush(self) -> None:
        """Persist pending changes (new matrix file, then the index as commit point)."""
        if not self._dirty:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        vectors = self.vectors
        new_file = f"vectors-{secrets.token_hex(6)}.npy"
        atomic_write(self.folder / new_file, lambda f: np.save(f, vectors, allow_pickle=False))
        meta = {
            "format": INDEX_FORMAT,
            "encoder": self.encoder,
            "modality": self.modality,
            "dim": self.dim,
            "rows": int(vectors.shape[0]),
            "vectors": new_file,
            "items": {iid: [sha, row] for iid, (sha, row) in self.items.items()},
        }
        blob = json.dumps(meta, separators=(",", ":")).encode("utf-8")
        atomic_write(self.folder / "index.json", lambda f: f.write(blob))
        old, self._vectors_file, self._dirty = self._vectors_file, new_file, False
        if old and old != new_file:
            (self.folder / old).unlink(missing_ok=True)


class FeatureCache:
    """All encoders' stores under ``cache_dir`` (one sub-folder per encoder name)."""

    def __init__(self, cache_dir: str | Path) -> None:
        self.cache_dir = Path(cache_dir)

    def folder(self, encoder_name: str) -> Path:
        return self.cache_dir / _safe_dirname(encoder_name)

    def read(self, encoder_name: str) -> EncoderStore:
        """Existing store of ``encoder_name``; ``FeatureCacheError`` if there is none."""
        folder = self.folder(encoder_name)
        if not (folder / "index.json").is_file():
            raise FeatureCacheError(
                f"no cached features of encoder {encoder_name!r} in {self.cache_dir} "
                "(run `micrec encode` first)"
            )
        store = EncoderStore.read(folder)
        if store.encoder != encoder_name:
            raise FeatureCacheError(
                f"{folder} holds encoder {store.encoder!r}, not {encoder_name!r}"
            )
        return store

    def open(self, encoder: ContentEncoder) -> EncoderStore:
        """The store for ``encoder``, created empty if absent."""
        folder = self.folder(encoder.name)
        if not (folder / "index.json").is_file():
            return EncoderStore(folder, encoder.name, encoder.modality, encoder.dim)
        store = self.read(encoder.name)
        if store.dim != encoder.dim or store.modality != encoder.modality:
            raise FeatureCacheError(
                f"{folder} holds {store.modality} features of dim {store.dim}, but encoder "
                f"{encoder.name!r} produces {encoder.modality} of dim {encoder.dim}; "
                "delete the folder"
            )
        return store


# --- encoding ---------------------------------------------------------------------------


@dataclass
class ModalityReport:
    """Counts for one modality of one ``encode_dataset`` call (each item counted once)."""

    modality: str
    encoder: str
    total: int = 0
    encoded: int = 0
    """Encoded in this call (new or changed content)."""
    reused: int = 0
    """Taken from the cache."""
    missing: int = 0
    """No content for this modality (empty text, no image)."""
    failed: int = 0
    """Content referenced but unreadable (missing/corrupt image file): treated as missing."""
    seconds: float = 0.0

    @property
    def items_per_s(self) -> float:
        """Encoding throughput of this call (0 when nothing was encoded)."""
        return self.encoded / self.seconds if self.encoded and self.seconds > 0 else 0.0


@dataclass
class EncodeReport:
    modalities: dict[str, ModalityReport] = field(default_factory=dict)

    def format_table(self) -> str:
        """Aligned text table, one row per modality."""
        head = (
            "modality",
            "encoder",
            "items",
            "encoded",
            "reused",
            "missing",
            "failed",
            "seconds",
            "items/s",
        )
        rows = [head] + [
            (
                r.modality,
                r.encoder,
                str(r.total),
                str(r.encoded),
                str(r.reused),
                str(r.missing),
                str(r.failed),
                f"{r.seconds:.1f}",
                f"{r.items_per_s:.1f}",
            )
            for r in self.modalities.values()
        ]
        widths = [max(len(row[k]) for row in rows) for k in range(len(head))]
        return "\n".join(
            "  ".join(
                c.ljust(w) if k < 2 else c.rjust(w)
                for k, (c, w) in enumerate(zip(row, widths, strict=True))
            )
            for row in rows
        )


def _encode_isolating_failures(
    encoder: ContentEncoder, todo: Sequence[Content], batch_size: int
) -> tuple[list[Content], np.ndarray, list[tuple[Content, str]]]:
    """Encode ``todo``; for images, a batch that fails is retried item by item so one corrupt
    file does not sink the rest. -> (encoded contents, their vectors, (content, error) failures)."""
    payload = [c.payload for c in todo]
    try:
        return list(todo), encoder.encode(payload, batch_size=batch_size), []
    except (OSError, ValueError, SyntaxError) as err:  # PIL decode errors
        if encoder.modality != "image":
            raise
        log.debug("batch failed (%s); retrying item by item", err)
    ok: list[Content] = []
    vecs: list[np.ndarray] = []
    failed: list[tuple[Content, str]] = []
    for c in todo:
        try:
            vecs.append(encoder.encode([c.payload], batch_size=1)[0])
            ok.append(c)
        except (OSError, ValueError, SyntaxError) as err:
            failed.append((c, f"{c.payload}: {err}"))
    mat = np.stack(vecs) if vecs else np.zeros((0, encoder.dim), dtype=np.float32)
    return ok, mat, failed


def encode_dataset(
    dataset: Dataset,
    encoders: Mapping[str, ContentEncoder],
    cache_dir: str | Path,
    *,
    batch_size: int = 64,
    progress: bool = False,
    flush_seconds: float = 60.0,
) -> tuple[ItemFeatures, EncodeReport]:
    """Features of every item of ``dataset`` for each ``{modality: encoder}``, via the cache.

    Only items whose content is new or changed are encoded; the cache is updated on disk
    (every ``flush_seconds`` as well as at the end, so an interrupted run keeps its work).

    Returns ``ItemFeatures`` with ``item_ids`` in items.csv order and, per modality,
    float32 ``[n_items, dim]`` vectors (zero rows + ``mask`` False for missing content),
    and an ``EncodeReport`` with per-modality counts and timings.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    cache = FeatureCache(cache_dir)
    item_ids = list(dataset.items)
    report = EncodeReport()
    out: dict[str, ModalityFeatures] = {}
    for modality, encoder in encoders.items():
        if encoder.modality != modality:
            raise ValueError(f"encoder {encoder.name!r} encodes {encoder.modality}, not {modality}")
        t0 = time.perf_counter()
        rep = ModalityReport(modality, encoder.name, total=len(item_ids))
        store = cache.open(encoder)
        vectors = np.zeros((len(item_ids), encoder.dim), dtype=np.float32)
        mask = np.zeros(len(item_ids), dtype=bool)
        todo: list[tuple[int, Content]] = []
        hit_idx: list[int] = []
        hit_rows: list[int] = []
        failures: list[str] = []
        for i, iid in enumerate(item_ids):
            content = item_content(dataset.items[iid], modality)
            if content is None:
                rep.missing += 1
            elif isinstance(content, str):
                rep.failed += 1
                failures.append(content)
            else:
                row = store.lookup(iid, content.sha256)
                if row is None:
                    todo.append((i, content))
                elif row == FAILED:
                    rep.failed += 1
                else:
                    hit_idx.append(i)
                    hit_rows.append(row)
        if hit_idx:
            vectors[hit_idx] = store.vectors[hit_rows]
            mask[hit_idx] = True
        rep.reused = len(hit_idx)

        bar = None
        if progress and todo:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(todo), desc=f"encode {modality} ({encoder.name})", unit="item")
        # Chunks of a few batches: frequent progress updates and periodic flushes, while
        # sentence-transformers still gets enough texts per call to bucket them by length.
        chunk = batch_size * 8
        last_flush = time.perf_counter()
        for start in range(0, len(todo), chunk):
            part = todo[start : start + chunk]
            pos = {c.item_id: i for i, c in part}
            ok, mat, bad = _encode_isolating_failures(encoder, [c for _, c in part], batch_size)
            store.put(ok, mat)
            for k, c in enumerate(ok):
                vectors[pos[c.item_id]], mask[pos[c.item_id]] = mat[k], True
            for c, msg in bad:
                store.mark_failed(c)
                failures.append(msg)
            rep.encoded += len(ok)
            rep.failed += len(bad)
            if bar is not None:
                bar.update(len(part))
            if time.perf_counter() - last_flush > flush_seconds:
                store.flush()
                last_flush = time.perf_counter()
        if bar is not None:
            bar.close()
        store.flush()
        if failures:
            log.warning(
                "%s: %d item(s) with unreadable content treated as missing, e.g. %s",
                modality,
                len(failures),
                "; ".join(failures[:3]),
            )
        rep.seconds = time.perf_counter() - t0
        report.modalities[modality] = rep
        out[modality] = ModalityFeatures(encoder.name, vectors, mask)
    return ItemFeatures(item_ids, out), report


def load_features(
    dataset: Dataset,
    cache_dir: str | Path,
    encoder_names: Mapping[str, str] | Sequence[str],
) -> ItemFeatures:
    """Cached features of every item of ``dataset``; reads only, never encodes.

    ``encoder_names`` is ``{modality: encoder name}`` or a list of names (the modality is
    then read from the cache). Content hashes are checked, so stale features are refused.

    Raises:
        FeatureCacheError: an encoder has no cache, or some item's current content is not
            cached (new item, edited title, changed image); the message says how many.
    """
    cache = FeatureCache(cache_dir)
    if isinstance(encoder_names, Mapping):
        wanted = list(encoder_names.items())
    else:
        wanted = [(cache.read(n).modality, n) for n in encoder_names]
    item_ids = list(dataset.items)
    out: dict[str, ModalityFeatures] = {}
    for modality, name in wanted:
        store = cache.read(name)
        if store.modality != modality:
            raise FeatureCacheError(
                f"encoder {name!r} has {store.modality} features, not {modality}"
            )
        vectors = np.zeros((len(item_ids), store.dim), dtype=np.float32)
        mask = np.zeros(len(item_ids), dtype=bool)
        absent: list[str] = []
        hit_idx: list[int] = []
        hit_rows: list[int] = []
        for i, iid in enumerate(item_ids):
            content = item_content(dataset.items[iid], modality)
            if content is None or isinstance(content, str):
                continue
            row = store.lookup(iid, content.sha256)
            if row is None:
                absent.append(iid)
            elif row != FAILED:
                hit_idx.append(i)
                hit_rows.append(row)
        if hit_idx:
            vectors[hit_idx] = store.vectors[hit_rows]
            mask[hit_idx] = True
        if absent:
            raise FeatureCacheError(
                f"{len(absent)} item(s) have no up-to-date {modality} features of {name!r} in "
                f"{cache_dir} (e.g. {', '.join(absent[:3])}); run `micrec encode` first"
            )
        out[modality] = ModalityFeatures(name, vectors, mask)
    return ItemFeatures(item_ids, out)
