"""Per-domain FAISS inner-product index over string item ids.

A domain index has two parts, searched together and merged by score:

* the **base** (app/index/base.py): the bundle's items, read-only once built: exact
  (flat) up to ``exact_max_items``, IVF above (nprobe calibrated on real users). With a
  serving cache directory it is built once per machine, written to a file and
  memory-mapped read-only by every worker (``IO_FLAG_MMAP_IFC``), so workers share one
  copy of the pages instead of holding one each;
* the **delta**: a small in-memory exact index (``IndexIDMap2(IndexFlatIP)``) of the
  vectors upserted after the build (items registered through the API, replacements).
  Removing or replacing a base item hides its base row (over-fetched like an exclusion).

Search results never contain FAISS's ``-1`` padding, honour ``exclude`` by over-fetching,
and scores are raw inner products (normalise vectors first for cosine).

The base's kind is fixed at build time: upserts that push a flat index past
``exact_max_items`` keep it exact (correct, only slower) and IVF keeps its trained lists
until the next model load builds the base again.

Concurrency: FAISS allows concurrent searches but not a search during ``add``/``remove``.
A writer-preferring readers-writer lock (app/index/rwlock.py) guards the delta and the label
maps rather than copy-on-write snapshots (which would clone the index per write);
``build`` (seconds for IVF: k-means) runs outside the lock on new objects that are then
swapped in, so a rebuild never blocks searches. Writers are serialised by a separate
mutex, so a build cannot overwrite an upsert that ran while it was training.

Threads: ``DomainIndex(threads=...)`` is the number of OpenMP threads of its FAISS calls;
``None`` leaves the OpenMP default (``OMP_NUM_THREADS`` or the number of cores).
``omp_set_num_threads`` only sets the *calling* thread's value, so setting it once at
construction would not reach the server's worker threads: it is set again (a cheap
per-thread variable) before every FAISS call.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import faiss
import numpy as np

from app.index.base import (
    ADD_CHUNK,
    LARGE_ABOVE,
    BaseIndex,
    BaseParams,
    IndexCalibration,
    default_nlist,
)
from app.index.delta import DeltaIndex
from app.index.rwlock import RWLock
from model.serving_cache import open_cached

__all__ = ["DomainIndex", "IndexCalibration", "default_nlist", "measure_recall"]

Queries = np.ndarray | Callable[[], np.ndarray] | None
"""Calibration queries, or a function computing them (called only when the base is built)."""


class DomainIndex:
    """Inner-product top-k over one domain's items. ``threads``: OpenMP threads of its FAISS
    calls (module docstring); ``dtype``: storage of the base vectors (float32 / float16)."""

    def __init__(
        self,
        domain: str,
        dim: int,
        *,
        exact_max_items: int = 50_000,
        ivf_nlist: int | None = None,
        ivf_nprobe: int = 32,
        ivf_target_recall: float | None = 0.95,
        threads: int | None = None,
        ivf_train_points_per_list: int = 64,
        ivf_train_iters: int = 10,
        dtype: str = "float32",
        ivf_rerank: int = 1000,
    ) -> None:
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self.domain, self.dim = domain, int(dim)
        self.params = BaseParams(
            exact_max_items=int(exact_max_items),
            nlist=ivf_nlist,
            nprobe=int(ivf_nprobe),
            target_recall=ivf_target_recall,
            train_points_per_list=int(ivf_train_points_per_list),
            train_iters=int(ivf_train_iters),
            dtype=dtype,
            rerank=int(ivf_rerank),
        )
        self.threads = threads
        self._rw = RWLock()
        self._write_mutex = threading.Lock()
        self._base = BaseIndex.empty(self.dim)
        self._base_ids: Sequence[str] = []  # base label (row) -> id
        self._base_pos: Callable[[str], int | None] = _nowhere  # id -> base label
        self._hidden: set[int] = set()  # base labels removed or replaced since the build
        self._hidden_ids: set[str] = set()
        self._delta = DeltaIndex(self.dim, 0)

    @property
    def kind(self) -> str:
        return self._base.kind

    @property
    def calibration(self) -> IndexCalibration | None:
        return self._base.calibration

    def _omp(self) -> None:
        if self.threads is not None:
            faiss.omp_set_num_threads(self.threads)

    # --- construction --------------------------------------------------------------------
    def build(
        self,
        ids: Sequence[str],
        vectors: np.ndarray,
        *,
        queries: Queries = None,
        cache_root: Path | None = None,
        source_key: str = "",
        positions: Callable[[str], int | None] | None = None,
    ) -> None:
        """Replace the whole content with ``ids`` / ``vectors`` ([n, dim]).

        The new base is constructed (and trained, for IVF) while searches keep using the
        old one, then swapped in. ``queries`` ([m, dim] real user vectors, or a function
        returning them): an IVF base with a target recall has its nprobe calibrated on
        them. ``cache_root`` + ``source_key`` (what the vectors were derived from, e.g.
        the bundle): the base is built once into ``cache_root`` and memory-mapped.
        ``positions``: id -> row in ``ids`` (None if absent) when the caller already has
        that map (the engine does): the index then keeps ``ids`` as given and builds no
        dict of its own (~60 bytes per item per worker).
        """
        if positions is None:
            ids = list(ids)
            own = {item_id: k for k, item_id in enumerate(ids)}
            if len(own) != len(ids):
                raise ValueError(f"{self.domain}: duplicate ids in one call")
            positions = own.get
        self._omp()
        with self._write_mutex:
            if cache_root is None:
                base = self._build_base(ids, vectors, queries)
            else:
                key = cache_key(self.domain, self.dim, self.params, source_key, len(ids))

                def write(tmp: Path) -> None:
                    self._build_base(ids, vectors, queries).save(tmp)

                base = BaseIndex.load(open_cached(cache_root, key, write), vectors)
                if len(base) != len(ids) or base.dim != self.dim:
                    raise ValueError(f"{self.domain}: cached index does not match the items")
            with self._rw.write():
                self._base, self._base_ids, self._base_pos = base, ids, positions
                self._hidden, self._hidden_ids = set(), set()
                self._delta = DeltaIndex(self.dim, len(ids))

    def _build_base(self, ids: Sequence[str], vectors: np.ndarray, queries: Queries) -> BaseIndex:
        if len(ids) > LARGE_ABOVE:  # no float32 copy of millions of rows: checked in chunks
            x = check_large(self.domain, self.dim, ids, vectors)
        else:
            x = check_vectors(self.domain, self.dim, ids, vectors)
        q = None
        if len(ids) > self.params.exact_max_items and self.params.target_recall:
            q = queries() if callable(queries) else queries
            if q is not None and len(q):
                q = check_vectors(self.domain, self.dim, [str(k) for k in range(len(q))], q)
        return BaseIndex.build(x, self.params, q)

    def upsert(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        """Add new ids, replace the vectors of existing ones (into the exact delta)."""
        ids = list(ids)
        x = check_vectors(self.domain, self.dim, ids, vectors)
        if not ids:
            return
        self._omp()
        with self._write_mutex, self._rw.write():
            self._remove_locked(ids)
            self._delta.add(ids, x)

    def _remove_locked(self, ids: Sequence[str]) -> int:
        """Remove ids from both parts (caller holds the write lock); returns how many."""
        removed = 0
        for item_id in set(ids):
            label = self._base_label(item_id)
            if label is not None:
                self._hidden.add(label)
                self._hidden_ids.add(item_id)
                removed += 1
        return removed + self._delta.remove(ids)

    def remove(self, ids: Sequence[str]) -> int:
        """Remove the given ids; unknown ids are ignored. Returns how many were removed."""
        self._omp()
        with self._write_mutex, self._rw.write():
            return self._remove_locked(ids)

    # --- reads ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._base_ids) - len(self._hidden) + len(self._delta)

    def __contains__(self, item_id: object) -> bool:
        if not isinstance(item_id, str):
            return False
        return item_id in self._delta.labels or self._base_label(item_id) is not None

    def _base_label(self, item_id: str) -> int | None:
        """The base row of ``item_id`` while it is served from the base, else None."""
        if item_id in self._hidden_ids:
            return None
        label = self._base_pos(item_id)
        return label if label is not None and label < len(self._base_ids) else None

    @property
    def nprobe(self) -> int | None:
        """Lists scanned per query (IVF only)."""
        return self._base.nprobe

    @property
    def nlist(self) -> int | None:
        """Inverted lists of the base (IVF only)."""
        return self._base.nlist

    @property
    def delta_size(self) -> int:
        """Vectors upserted since the build (held in the exact in-memory part)."""
        return len(self._delta)

    def set_nprobe(self, nprobe: int) -> None:
        """Change the recall/latency trade-off of an IVF index (no effect on flat)."""
        if nprobe < 1:
            raise ValueError(f"nprobe must be >= 1, got {nprobe}")
        with self._write_mutex, self._rw.write():
            self.params = dataclasses.replace(self.params, nprobe=nprobe)
            self._base.set_nprobe(nprobe)

    def _label(self, item_id: str) -> int | None:
        label = self._delta.labels.get(item_id)
        return self._base_label(item_id) if label is None else label

    def _reconstruct(self, labels: np.ndarray) -> np.ndarray:
        """[len(labels), dim] stored vectors (caller holds a lock)."""
        out = np.empty((labels.size, self.dim), dtype=np.float32)
        in_base = labels < len(self._base_ids)
        if in_base.any():
            out[in_base] = self._base.reconstruct(labels[in_base])
        if not in_base.all():
            out[~in_base] = self._delta.reconstruct(labels[~in_base])
        return out

    def vector(self, item_id: str) -> np.ndarray | None:
        """The stored vector of ``item_id`` (a copy), or None."""
        with self._rw.read():
            label = self._label(item_id)
            if label is None:
                return None
            return self._reconstruct(np.array([label], dtype=np.int64))[0].copy()

    def score(self, query: np.ndarray, ids: Sequence[str]) -> list[tuple[str, float]]:
        """Exact inner products of ``query`` ([dim]) with the stored vectors of ``ids`` (ids
        not in the index left out): for selective filters and the co-purchase stage, where
        a search would have to fetch most of the index to find them."""
        q = np.ascontiguousarray(np.asarray(query, dtype=np.float32).reshape(-1))
        if q.shape[0] != self.dim or not np.isfinite(q).all():
            raise ValueError(f"{self.domain}: query must be {self.dim} finite numbers")
        with self._rw.read():
            found = [(i, label) for i in ids if (label := self._label(i)) is not None]
            if not found:
                return []
            labels = np.fromiter((label for _, label in found), np.int64, len(found))
            scores = self._reconstruct(labels) @ q
        return list(zip((i for i, _ in found), scores.tolist(), strict=True))

    def search(
        self,
        queries: np.ndarray,
        k: int,
        *,
        exclude: Sequence[set[str]] | None = None,
    ) -> list[list[tuple[str, float]]]:
        """Top-``k`` (id, inner product) per query row, best first.

        ``queries`` is [m, dim] (a single [dim] vector is taken as one query).
        ``exclude[i]`` are ids never returned for query i (e.g. items the user has seen):
        the search fetches k + |exclude[i] in index| candidates so that k remain. k is
        clamped to the index size; an IVF index may return fewer than k when the probed
        lists hold fewer candidates.
        """
        q = check_queries(self.domain, self.dim, queries, exclude)
        m = q.shape[0]
        if m == 0 or k <= 0:
            return [[] for _ in range(m)]
        self._omp()
        with self._rw.read():
            n = len(self)
            if n == 0:
                return [[] for _ in range(m)]
            k = min(k, n)
            extra = 0
            if exclude is not None:
                extra = max(sum(1 for i in ex if i in self) for ex in exclude)
            scores, labels = self._candidates(q, k + extra)
            return [
                self._hits(labels[row], scores[row], k, exclude[row] if exclude is not None else ())
                for row in range(m)
            ]

    def _hits(
        self, labels: np.ndarray, scores: np.ndarray, k: int, skip: set[str] | tuple[()]
    ) -> list[tuple[str, float]]:
        """One query's candidates as (id, score), best first: hidden base rows and ``skip``
        left out, at most ``k`` (caller holds the read lock)."""
        base_ids, delta_ids = self._base_ids, self._delta.ids
        nb, hidden = len(base_ids), self._hidden
        hits: list[tuple[str, float]] = []
        for label, score in zip(labels.tolist(), scores.tolist(), strict=True):
            if label < 0:  # FAISS pads with -1 when it has fewer than `fetch`
                break
            if label < nb:
                if label in hidden:
                    continue
                item_id = base_ids[label]
            else:
                item_id = delta_ids[label]
            if item_id in skip:
                continue
            hits.append((item_id, score))
            if len(hits) == k:
                break
        return hits

    def _candidates(self, q: np.ndarray, want: int) -> tuple[np.ndarray, np.ndarray]:
        """Best ``want`` live candidates per query from both parts (plus the hidden base rows
        they may include): ([m, f] scores, [m, f] labels), best first, -1 padded."""
        nb = len(self._base)
        fetch_base = min(want + len(self._hidden), nb)
        if fetch_base:
            scores, labels = self._base.search(q, fetch_base)
        else:
            scores = np.empty((q.shape[0], 0), np.float32)
            labels = np.empty((q.shape[0], 0), np.int64)
        if not len(self._delta):
            return scores, labels
        return merge(scores, labels, *self._delta.search(q, want))

    def export(self) -> tuple[list[str], np.ndarray]:
        """(ids, [n, dim] vectors) currently in the index (for exact comparisons)."""
        with self._rw.read():
            ids = [i for k, i in enumerate(self._base_ids) if k not in self._hidden]
            ids += list(self._delta.ids.values())
            if not ids:
                return [], np.empty((0, self.dim), dtype=np.float32)
            labels = np.fromiter((self._label(i) for i in ids), np.int64, len(ids))
            x = self._reconstruct(labels)
        return ids, x


def cache_key(domain: str, dim: int, params: BaseParams, source_key: str, n: int) -> str:
    """The serving cache key of a base index: everything its content depends on."""
    doc = {"source": source_key, "domain": domain, "n": n, "dim": dim}
    doc |= dataclasses.asdict(params) | {"faiss": faiss.__version__}
    if n > LARGE_ABOVE:  # large bases are IVF-PQ fast scan + exact re-rank since this key
        doc["large_scan"] = "ivf-pq fast scan, exact re-rank"
    else:  # the re-rank depth is that of large bases only: smaller ones keep their keys
        doc.pop("rerank")
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:32]


def check_vectors(domain: str, dim: int, ids: Sequence[str], vectors: np.ndarray) -> np.ndarray:
    """``vectors`` as contiguous float32 [len(ids), dim], or ValueError saying what is wrong."""
    vectors = np.asarray(vectors)
    if vectors.ndim != 2 or vectors.shape[1] != dim:
        raise ValueError(f"{domain}: vectors must have shape [n, {dim}], got {vectors.shape}")
    if len(ids) != vectors.shape[0]:
        raise ValueError(f"{domain}: {len(ids)} ids for {vectors.shape[0]} vectors")
    if len(set(ids)) != len(ids):
        raise ValueError(f"{domain}: duplicate ids in one call")
    out = np.ascontiguousarray(vectors, dtype=np.float32)
    if not np.isfinite(out).all():
        raise ValueError(f"{domain}: vectors contain NaN or inf")
    return out


def check_large(domain: str, dim: int, ids: Sequence[str], vectors: np.ndarray) -> np.ndarray:
    """:func:`check_vectors` for a base of more than ``LARGE_ABOVE`` items: ``vectors`` (a
    memory map, float16 or float32) is checked a chunk at a time and returned as it is
    (BaseIndex builds large indexes chunk by chunk); duplicate ids are the caller's to
    exclude (the engine's id lookup has one row per id)."""
    if vectors.ndim != 2 or vectors.shape[1] != dim:
        raise ValueError(f"{domain}: vectors must have shape [n, {dim}], got {vectors.shape}")
    if len(ids) != vectors.shape[0]:
        raise ValueError(f"{domain}: {len(ids)} ids for {vectors.shape[0]} vectors")
    for start in range(0, len(vectors), ADD_CHUNK):
        if not np.isfinite(vectors[start : start + ADD_CHUNK]).all():
            raise ValueError(f"{domain}: vectors contain NaN or inf")
    return vectors


def check_queries(
    domain: str, dim: int, queries: np.ndarray, exclude: Sequence[set[str]] | None
) -> np.ndarray:
    """``queries`` ([m, dim], or one [dim] vector) as contiguous float32 [m, dim], or
    ValueError saying what is wrong (also: one exclude set per query)."""
    q = np.asarray(queries)
    if q.ndim == 1:
        q = q.reshape(1, -1)
    if q.ndim != 2 or q.shape[1] != dim:
        raise ValueError(f"{domain}: queries must have shape [m, {dim}], got {np.shape(queries)}")
    q = np.ascontiguousarray(q, dtype=np.float32)
    if not np.isfinite(q).all():
        raise ValueError(f"{domain}: queries contain NaN or inf")
    if exclude is not None and len(exclude) != q.shape[0]:
        raise ValueError(f"{domain}: {len(exclude)} exclude sets for {q.shape[0]} queries")
    return q


def merge(
    s1: np.ndarray, l1: np.ndarray, s2: np.ndarray, l2: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Two (scores, labels) result lists per query merged best first (-1 labels last)."""
    scores = np.hstack([np.where(l1 >= 0, s1, -np.inf), np.where(l2 >= 0, s2, -np.inf)])
    labels = np.hstack([l1, l2])
    order = np.argsort(-scores, axis=1, kind="stable")
    labels = np.take_along_axis(labels, order, axis=1)
    top = np.take_along_axis(scores, order, axis=1)
    labels[~np.isfinite(top)] = -1
    return top, labels


def _nowhere(item_id: str) -> int | None:
    return None


def measure_recall(index: DomainIndex, queries: np.ndarray, k: int) -> float:
    """Mean recall@k of ``index.search`` against exact brute force over the same items.

    recall@k = |returned ∩ exact top-k| / min(k, n), averaged over the queries.
    """
    ids, x = index.export()
    n = len(ids)
    q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
    if n == 0 or k <= 0 or q.shape[0] == 0:
        return 1.0
    kk = min(k, n)
    index._omp()  # the exact search below runs with the index's thread count too
    exact = faiss.IndexFlatIP(index.dim)
    exact.add(x)
    _, truth = exact.search(q, kk)
    approx = index.search(q, kk)
    hits = 0
    for row, found in zip(truth, approx, strict=True):
        want = {ids[j] for j in row.tolist()}
        hits += len(want.intersection(i for i, _ in found))
    return hits / (kk * q.shape[0])
