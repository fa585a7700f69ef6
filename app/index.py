"""Per-domain FAISS inner-product index over string item ids.

Index kinds (chosen by :meth:`DomainIndex.build` from the number of items):

* ``"flat"`` (n <= ``exact_max_items``): ``IndexIDMap2(IndexFlatIP)``, exact. The ID map
  lets single items be removed and reconstructed by label.
* ``"ivf"``: ``IndexIVFFlat`` over the vectors mapped from inner product to L2 (below),
  ``nlist`` ~ 4*sqrt(n) lists trained on (a sample of) the vectors, ``nprobe`` lists
  scanned per query. It keeps its own ids, and a hashtable direct map makes remove and
  reconstruct by label work. Candidates are re-scored by exact inner product.

Why IVF over L2 rather than inner product: item vectors are not unit length, and lists
built by k-means for inner product miss long vectors. Appending ``sqrt(R^2 - |x|^2)`` to
every item (``R`` = the largest norm at build time) and 0 to every query makes L2 order
equal inner-product order (Bachrach et al., RecSys 2014): on the padded 1e5 bench
catalogue recall@100 at nprobe 32 rose from 0.49 to 1.00 (bench/ivf_mips_transform.py).
Items upserted later with a norm above ``R`` have no such coordinate; they go to a small
exact "overflow" index searched alongside (a rebuild folds them in).

Recall is measured, not assumed: when :meth:`DomainIndex.build` gets sample queries (the
service passes real users of the bundle), it searches them exactly and raises ``nprobe``
from the configured value, doubling, until recall@100 reaches ``ivf_target_recall``
(:attr:`DomainIndex.calibration` records the outcome; all lists = exact, so the target is
always reachable). When the target needs more than half of the lists, the domain is served
by an exact index instead: on vectors with no cluster structure IVF at that nprobe was
slower than exact search (bench/index_recall.py).

The kind is fixed at build time: upserts into a flat index that push it past
``exact_max_items`` keep it exact (correct, only slower) and IVF keeps its trained
centroids for new vectors; :attr:`DomainIndex.needs_rebuild` says when a rebuild (done by
the caller, e.g. at the next model load) would change the kind.

Concurrency: FAISS allows concurrent searches but not a search during ``add``/``remove``.
We use a writer-preferring readers-writer lock rather than copy-on-write snapshots:

* copy-on-write clones the whole index per write, O(n*d) time and a second copy in memory
  (~0.5 GB transient at 1M items, d=64) for every registered cold-start item, while a
  single-item add/remove under the exclusive lock takes microseconds (flat add, IVF add)
  to a few milliseconds (an O(n) compaction on remove), so readers wait at most that long;
* ``build`` (seconds for IVF: k-means) is done outside the lock on a new index that is then
  swapped in under the exclusive lock, so a rebuild never blocks searches;
* writer preference keeps a steady stream of searches from starving registrations.

Writers are serialised by a separate mutex, so a build cannot overwrite an upsert that ran
while it was training. Search results never contain FAISS's ``-1`` padding, honour
``exclude`` by over-fetching, and scores are raw inner products (normalise vectors first
for cosine).
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import faiss
import numpy as np


class _RWLock:
    """Many readers or one writer; waiting writers block new readers (writer preference)."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0

    @contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            while self._writer or self._writers_waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if self._readers == 0:
                    self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._writers_waiting += 1
            try:
                while self._writer or self._readers:
                    self._cond.wait()
            finally:
                self._writers_waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


@dataclasses.dataclass(frozen=True)
class IndexCalibration:
    """How an IVF index's ``nprobe`` was chosen at build time."""

    target_recall: float
    nprobe: int
    nlist: int
    recall: float  # recall@k at ``nprobe`` on the sample queries
    k: int
    queries: int
    seconds: float
    exact_instead: bool = False
    """The target needed more than half of the lists: the index was built exact instead
    (scanning that much of an IVF index costs about what exact search does)."""


def _augment(x: np.ndarray, radius: float) -> np.ndarray:
    """[n, d] -> [n, d+1]: append sqrt(radius^2 - |x|^2), so |x'| = radius for every row and
    |q' - x'|^2 = |q|^2 + radius^2 - 2 q.x for a query q' = [q, 0]."""
    sq = np.einsum("ij,ij->i", x, x, dtype=np.float64)
    extra = np.sqrt(np.maximum(radius * radius - sq, 0.0))
    return np.ascontiguousarray(np.hstack([x, extra[:, None]]), dtype=np.float32)


def _pad_queries(q: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.hstack([q, np.zeros((q.shape[0], 1), q.dtype)]))


def default_nlist(n: int) -> int:
    """~4*sqrt(n) inverted lists, at least 1 and never more than n/39 (FAISS wants >= 39
    training points per centroid for a stable k-means)."""
    return max(1, min(round(4 * math.sqrt(n)), n // 39))


class DomainIndex:
    """Inner-product top-k search over the items of one domain.

    ``threads``: OpenMP threads for this index's FAISS calls; ``None`` leaves the OpenMP
    default (``OMP_NUM_THREADS`` or the number of cores). ``omp_set_num_threads`` only
    sets the *calling* thread's value, so setting it once at construction would not reach
    the server's worker threads: it is set again (a cheap per-thread variable) before every
    FAISS call.
    """

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
    ) -> None:
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        if ivf_nprobe < 1:
            raise ValueError(f"ivf_nprobe must be >= 1, got {ivf_nprobe}")
        if ivf_target_recall is not None and not 0 < ivf_target_recall <= 1:
            raise ValueError(f"ivf_target_recall must be in (0, 1], got {ivf_target_recall}")
        self.domain = domain
        self.dim = int(dim)
        self.exact_max_items = int(exact_max_items)
        self.ivf_nlist = ivf_nlist
        self.ivf_nprobe = int(ivf_nprobe)
        self.ivf_target_recall = ivf_target_recall
        # k-means on 64 points per list is within noise of FAISS's default 256 for recall
        # and 4x cheaper to train (1M items: ~4000 lists, 256k training points).
        self.ivf_train_points_per_list = int(ivf_train_points_per_list)
        # 10 k-means iterations instead of FAISS's 25: IVF only needs a reasonable
        # partition (recall is measured, bench/index_recall.py), and training is the
        # dominant cost of a build.
        self.ivf_train_iters = int(ivf_train_iters)
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self.threads = threads
        self._rw = _RWLock()
        self._write_mutex = threading.Lock()
        # Any: faiss's stubs type IVF attributes (nprobe, nlist) on subclasses only.
        self._index: Any = self._new_flat()
        self.kind = "flat"
        # IVF only: the radius of the L2 mapping, and the exact index (+ its labels) for
        # vectors upserted after the build with a larger norm.
        self._radius = 0.0
        self._overflow: Any = self._new_flat()
        self._overflow_labels: set[int] = set()
        self.calibration: IndexCalibration | None = None
        self._ids: list[str | None] = []  # label -> id (None once removed); labels never reused
        self._labels: dict[str, int] = {}  # id -> label

    def _omp(self) -> None:
        if self.threads is not None:
            faiss.omp_set_num_threads(self.threads)

    # --- construction --------------------------------------------------------------------
    def _new_flat(self) -> faiss.Index:
        return faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))

    def _new_ivf(self, augmented: np.ndarray) -> Any:
        n = augmented.shape[0]
        nlist = min(self.ivf_nlist or default_nlist(n), n)
        quantizer = faiss.IndexFlatL2(self.dim + 1)
        index = faiss.IndexIVFFlat(quantizer, self.dim + 1, nlist, faiss.METRIC_L2)
        # (faiss's Python wrapper keeps `quantizer` alive as long as `index`.)
        index.cp.max_points_per_centroid = self.ivf_train_points_per_list
        index.cp.niter = self.ivf_train_iters
        index.train(augmented)
        index.set_direct_map_type(faiss.DirectMap.Hashtable)  # type: ignore[attr-defined]
        index.nprobe = min(self.ivf_nprobe, nlist)
        return index

    def _calibrate(self, index: Any, x: np.ndarray, queries: np.ndarray) -> IndexCalibration:
        """Smallest nprobe (configured value, doubled up to all lists) whose recall@100 on
        ``queries`` reaches the target; sets it on ``index``."""
        assert self.ivf_target_recall is not None
        t = time.perf_counter()
        k = min(100, x.shape[0])
        _, truth = faiss.knn(queries, x, k, metric=faiss.METRIC_INNER_PRODUCT)
        padded = _pad_queries(queries)
        nprobe, nlist = min(self.ivf_nprobe, index.nlist), index.nlist
        while True:
            index.nprobe = nprobe
            _, found = index.search(padded, k)
            hits = sum(
                len(set(a.tolist()) & set(b.tolist())) for a, b in zip(truth, found, strict=True)
            )
            recall = hits / (k * len(queries))
            if recall >= self.ivf_target_recall or nprobe >= nlist:
                break
            nprobe = min(2 * nprobe, nlist)
        return IndexCalibration(
            target_recall=self.ivf_target_recall,
            nprobe=nprobe,
            nlist=nlist,
            recall=recall,
            k=k,
            queries=len(queries),
            seconds=time.perf_counter() - t,
        )

    def _check_vectors(self, ids: Sequence[str], vectors: np.ndarray) -> np.ndarray:
        vectors = np.asarray(vectors)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ValueError(
                f"{self.domain}: vectors must have shape [n, {self.dim}], got {vectors.shape}"
            )
        if len(ids) != vectors.shape[0]:
            raise ValueError(f"{self.domain}: {len(ids)} ids for {vectors.shape[0]} vectors")
        if len(set(ids)) != len(ids):
            raise ValueError(f"{self.domain}: duplicate ids in one call")
        out = np.ascontiguousarray(vectors, dtype=np.float32)
        if not np.isfinite(out).all():
            raise ValueError(f"{self.domain}: vectors contain NaN or inf")
        return out

    def build(
        self, ids: Sequence[str], vectors: np.ndarray, *, queries: np.ndarray | None = None
    ) -> None:
        """Replace the whole content with ``ids`` / ``vectors`` ([n, dim] float32).

        The new index is constructed (and trained, for IVF) while searches keep using the
        old one, then swapped in. ``queries`` ([m, dim], e.g. real user vectors): for an
        IVF index with ``ivf_target_recall`` set, ``nprobe`` is calibrated on them.
        """
        ids = list(ids)
        x = self._check_vectors(ids, vectors)
        n = len(ids)
        self._omp()
        calibration = None
        radius = 0.0
        with self._write_mutex:
            if n > self.exact_max_items and n > 0:
                radius = float(np.sqrt(np.einsum("ij,ij->i", x, x).max())) or 1.0
                augmented = _augment(x, radius)
                index, kind = self._new_ivf(augmented), "ivf"
                index.add_with_ids(augmented, np.arange(n, dtype=np.int64))
                del augmented
                if queries is not None and len(queries) and self.ivf_target_recall:
                    q = self._check_vectors([str(k) for k in range(len(queries))], queries)
                    calibration = self._calibrate(index, x, q)
                    if 2 * calibration.nprobe > index.nlist:
                        calibration = dataclasses.replace(calibration, exact_instead=True)
                        index, kind, radius = self._new_flat(), "flat", 0.0
                        index.add_with_ids(x, np.arange(n, dtype=np.int64))
            else:
                index, kind = self._new_flat(), "flat"
                if n:
                    index.add_with_ids(x, np.arange(n, dtype=np.int64))
            labels = {item_id: k for k, item_id in enumerate(ids)}
            with self._rw.write():
                self._index, self.kind, self._radius = index, kind, radius
                self._overflow, self._overflow_labels = self._new_flat(), set()
                self._ids, self._labels = list(ids), labels
                self.calibration = calibration

    def upsert(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        """Add new ids, replace the vectors of existing ones."""
        ids = list(ids)
        x = self._check_vectors(ids, vectors)
        if not ids:
            return
        self._omp()
        with self._write_mutex, self._rw.write():
            old = np.array([self._labels[i] for i in ids if i in self._labels], dtype=np.int64)
            if old.size:
                self._remove_labels(old)
            # An existing id keeps its label; a new one gets the next, never reused, label.
            labels = np.empty(len(ids), dtype=np.int64)
            for k, item_id in enumerate(ids):
                label = self._labels.get(item_id)
                if label is None:
                    label = len(self._ids)
                    self._ids.append(item_id)
                    self._labels[item_id] = label
                labels[k] = label
            if self.kind != "ivf":
                self._index.add_with_ids(x, labels)
                return
            # Rows longer than the build's radius cannot be mapped to L2 exactly.
            fits = np.einsum("ij,ij->i", x, x) <= self._radius * self._radius
            if fits.any():
                self._index.add_with_ids(_augment(x[fits], self._radius), labels[fits])
            if not fits.all():
                self._overflow.add_with_ids(x[~fits], labels[~fits])
                self._overflow_labels.update(labels[~fits].tolist())

    def _remove_labels(self, labels: np.ndarray) -> int:
        """Remove labels from the FAISS index (caller holds the write lock)."""
        if self.kind != "ivf":
            return _remove_from(self._index, labels, hashed=False)
        spilled = np.array([x for x in labels.tolist() if x in self._overflow_labels], np.int64)
        removed = 0
        if spilled.size:
            removed += _remove_from(self._overflow, spilled, hashed=False)
            self._overflow_labels.difference_update(spilled.tolist())
        rest = np.setdiff1d(labels, spilled)
        if rest.size:
            removed += _remove_from(self._index, rest, hashed=True)
        return removed

    def remove(self, ids: Sequence[str]) -> int:
        """Remove the given ids; unknown ids are ignored. Returns how many were removed."""
        self._omp()
        with self._write_mutex, self._rw.write():
            labels = [self._labels.pop(i) for i in set(ids) if i in self._labels]
            if not labels:
                return 0
            removed = self._remove_labels(np.array(labels, dtype=np.int64))
            for label in labels:
                self._ids[label] = None
            return removed

    # --- reads ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._labels)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._labels

    @property
    def nprobe(self) -> int | None:
        """Lists scanned per query (IVF only)."""
        index = self._index
        return int(index.nprobe) if self.kind == "ivf" else None

    @property
    def overflow_size(self) -> int:
        """IVF: vectors upserted since the build that live in the exact overflow index."""
        return len(self._overflow_labels)

    @property
    def needs_rebuild(self) -> bool:
        """True when a build() over the current content would pick another kind, or when
        more than 1 % of an IVF index's items sit in its exact overflow index."""
        n = len(self)
        if (self.kind == "flat") == (n > self.exact_max_items):
            return True
        return self.kind == "ivf" and self.overflow_size > 0.01 * n

    def set_nprobe(self, nprobe: int) -> None:
        """Change the recall/latency trade-off of an IVF index (no effect on flat)."""
        if nprobe < 1:
            raise ValueError(f"nprobe must be >= 1, got {nprobe}")
        with self._write_mutex, self._rw.write():
            self.ivf_nprobe = nprobe
            if self.kind == "ivf":
                self._index.nprobe = min(nprobe, self._index.nlist)

    def vector(self, item_id: str) -> np.ndarray | None:
        """The stored vector of ``item_id`` (a copy), or None."""
        with self._rw.read():
            label = self._labels.get(item_id)
            if label is None:
                return None
            return self._reconstruct(np.array([label], dtype=np.int64))[0].copy()

    def score(self, query: np.ndarray, ids: Sequence[str]) -> list[tuple[str, float]]:
        """Exact inner products of ``query`` ([dim]) with the stored vectors of ``ids``;
        ids not in the index are left out. For filters that leave few candidates, where an
        approximate search would have to fetch most of the index to find them."""
        q = np.ascontiguousarray(np.asarray(query, dtype=np.float32).reshape(-1))
        if q.shape[0] != self.dim or not np.isfinite(q).all():
            raise ValueError(f"{self.domain}: query must be {self.dim} finite numbers")
        with self._rw.read():
            present = [i for i in ids if i in self._labels]
            if not present:
                return []
            labels = np.fromiter((self._labels[i] for i in present), np.int64, len(present))
            scores = self._reconstruct(labels) @ q
        return list(zip(present, scores.tolist(), strict=True))

    def _reconstruct(self, labels: np.ndarray) -> np.ndarray:
        """[len(labels), dim] stored vectors (caller holds a lock)."""
        if self.kind != "ivf":
            return np.asarray(self._index.reconstruct_batch(labels), dtype=np.float32)
        out = np.empty((labels.size, self.dim), dtype=np.float32)
        spilled = np.fromiter((x in self._overflow_labels for x in labels.tolist()), bool)
        if spilled.any():
            out[spilled] = self._overflow.reconstruct_batch(labels[spilled])
        if not spilled.all():
            out[~spilled] = self._index.reconstruct_batch(labels[~spilled])[:, : self.dim]
        return out

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
        q = np.asarray(queries)
        if q.ndim == 1:
            q = q.reshape(1, -1)
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise ValueError(
                f"{self.domain}: queries must have shape [m, {self.dim}], got {np.shape(queries)}"
            )
        q = np.ascontiguousarray(q, dtype=np.float32)
        if not np.isfinite(q).all():
            raise ValueError(f"{self.domain}: queries contain NaN or inf")
        m = q.shape[0]
        if exclude is not None and len(exclude) != m:
            raise ValueError(f"{self.domain}: {len(exclude)} exclude sets for {m} queries")
        if m == 0 or k <= 0:
            return [[] for _ in range(m)]
        self._omp()
        with self._rw.read():
            n = len(self._labels)
            if n == 0:
                return [[] for _ in range(m)]
            k = min(k, n)
            extra = 0
            if exclude is not None:
                extra = max(sum(1 for i in ex if i in self._labels) for ex in exclude)
            fetch = min(k + extra, n)
            if self.kind == "ivf":
                scores, labels = self._search_ivf(q, fetch)
            else:
                scores, labels = self._index.search(q, fetch)
            ids = self._ids  # labels -> ids, read under the same lock as the search
            out: list[list[tuple[str, float]]] = []
            for row in range(m):
                skip = exclude[row] if exclude is not None else ()
                hits: list[tuple[str, float]] = []
                for label, score in zip(labels[row].tolist(), scores[row].tolist(), strict=True):
                    if label < 0:  # FAISS pads with -1 when it has fewer than `fetch`
                        break
                    item_id = ids[label]
                    if item_id is None or item_id in skip:
                        continue
                    hits.append((item_id, score))
                    if len(hits) == k:
                        break
                out.append(hits)
        return out

    def _search_ivf(self, q: np.ndarray, fetch: int) -> tuple[np.ndarray, np.ndarray]:
        """IVF candidates re-scored by exact inner product, merged with the overflow index:
        ([m, fetch] scores, [m, fetch] labels), best first, -1 padded (caller holds a lock)."""
        _, cand = self._index.search(_pad_queries(q), fetch)
        scores = np.full(cand.shape, -np.inf, dtype=np.float32)
        for row in range(q.shape[0]):
            valid = cand[row] >= 0
            if valid.any():
                vecs = self._index.reconstruct_batch(cand[row][valid])[:, : self.dim]
                scores[row, valid] = vecs @ q[row]
        if self._overflow_labels:
            extra_s, extra_l = self._overflow.search(q, min(fetch, len(self._overflow_labels)))
            scores = np.hstack([scores, np.where(extra_l >= 0, extra_s, -np.inf)])
            cand = np.hstack([cand, extra_l])
        order = np.argsort(-scores, axis=1, kind="stable")[:, :fetch]
        labels = np.take_along_axis(cand, order, axis=1)
        top = np.take_along_axis(scores, order, axis=1)
        labels[~np.isfinite(top)] = -1
        return top, labels

    def export(self) -> tuple[list[str], np.ndarray]:
        """(ids, [n, dim] vectors) currently in the index (for exact comparisons)."""
        with self._rw.read():
            ids = [i for i in self._ids if i is not None]
            labels = np.array([self._labels[i] for i in ids], dtype=np.int64)
            if not ids:
                return [], np.empty((0, self.dim), dtype=np.float32)
            x = self._reconstruct(labels)
        return ids, x.reshape(len(ids), self.dim)


def _remove_from(index: Any, labels: np.ndarray, *, hashed: bool) -> int:
    if hashed:
        # IVF's hashtable direct map only removes through an explicit id array (it then
        # finds each id's list directly instead of scanning all lists).
        sel: Any = faiss.IDSelectorArray(labels.size, faiss.swig_ptr(labels))
    else:
        # IndexIDMap tests every stored id for membership: a hash set, not a list scan.
        sel = faiss.IDSelectorBatch(labels.size, faiss.swig_ptr(labels))
    return int(index.remove_ids(sel))


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
