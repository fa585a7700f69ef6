"""The read-only part of a domain index: the bundle's items, built once per model load.

Kinds (chosen from the number of items):

* ``"flat"`` (n <= ``exact_max_items``): ``IndexFlatIP``, exact.
* ``"ivf"``: ``IndexIVFFlat`` over the vectors mapped from inner product to L2 (below),
  ``nlist`` ~ 4*sqrt(n) lists trained on (a sample of) the vectors, ``nprobe`` lists
  scanned per query; candidates are re-scored by exact inner product.
* ``"ivf-pq"`` (n > ``LARGE_ABOVE``): IVF over 4-bit product-quantised codes scanned by
  FAISS's fast scan, the best ``rerank`` candidates re-scored exactly against the serving
  vectors the index was built from (app/index/large.py); ``nprobe`` calibrated at that
  depth.

Labels are the rows of the vectors the index was built from (0..n-1), so no id map is
stored; an IVF index keeps an array direct map (8 bytes per item) to re-score candidates.

Why IVF over L2 rather than inner product: item vectors are not unit length, and lists
built by k-means for inner product miss long vectors. Appending ``sqrt(R^2 - |x|^2)`` to
every item (``R`` = the largest norm) and 0 to every query makes L2 order equal
inner-product order (Bachrach et al., RecSys 2014): on the padded 1e5 bench catalogue
recall@100 at nprobe 32 rose from 0.49 to 1.00 (bench/ivf_mips_transform.py).

Recall is measured, not assumed: given sample queries (the service passes real users of
the bundle), :meth:`BaseIndex.build` searches them exactly and raises ``nprobe`` from the
configured value, doubling, until recall@100 reaches ``target_recall``
(:attr:`BaseIndex.calibration`; all lists = exact, so the target is always reachable).
When the target needs more than half of the lists the index is built exact instead: on
vectors with no cluster structure IVF at that nprobe was slower than exact search
(bench/index_recall.py).

``dtype="float16"`` stores the vectors as half floats (``IndexScalarQuantizer`` /
``IndexIVFScalarQuantizer`` with ``QT_fp16``): half the memory, scores computed on the
rounded vectors (recall and NDCG effect: docs/results/serve-steps/float16.md).

:meth:`save` / :meth:`load` write the index to a file and map it back read-only
(``IO_FLAG_MMAP_IFC``): every worker process that maps the same file shares its pages.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from app.index import large
from app.index.large import set_probe

LARGE_ABOVE = 2_000_000
"""Above this many items an IVF index is built a chunk at a time (``_build_large``)."""

ADD_CHUNK = 1 << 20

INDEX_FILE = "index.faiss"
META_FILE = "index.json"
CENTROIDS_FILE = "centroids.npy"
"""``ivf-pq``: the lists' centroids (the coarse quantizer holds their projections)."""


@dataclass(frozen=True)
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


@dataclass(frozen=True)
class BaseParams:
    """How a base index is built (everything its content depends on: part of the cache key)."""

    exact_max_items: int = 50_000
    nlist: int | None = None
    nprobe: int = 32
    target_recall: float | None = 0.95
    # k-means on 64 points per list is within noise of FAISS's default 256 for recall
    # and 4x cheaper to train (1M items: ~4000 lists, 256k training points).
    train_points_per_list: int = 64
    # 10 k-means iterations instead of FAISS's 25: IVF only needs a reasonable partition
    # (recall is measured, bench/index_recall.py), and training dominates a build.
    train_iters: int = 10
    dtype: str = "float32"
    rerank: int = 1000
    """Bases over ``LARGE_ABOVE`` items (``ivf-pq``): candidates per query re-scored exactly."""

    def __post_init__(self) -> None:
        if self.nprobe < 1:
            raise ValueError(f"ivf_nprobe must be >= 1, got {self.nprobe}")
        if self.rerank < 1:
            raise ValueError(f"ivf_rerank must be >= 1, got {self.rerank}")
        if self.target_recall is not None and not 0 < self.target_recall <= 1:
            raise ValueError(f"ivf_target_recall must be in (0, 1], got {self.target_recall}")
        if self.dtype not in ("float32", "float16"):
            raise ValueError(f"dtype must be float32 or float16, got {self.dtype!r}")


def augment(x: np.ndarray, radius: float) -> np.ndarray:
    """[n, d] -> [n, d+1]: append sqrt(radius^2 - |x|^2), so |x'| = radius for every row and
    |q' - x'|^2 = |q|^2 + radius^2 - 2 q.x for a query q' = [q, 0]."""
    return large.index_rows(x, radius, x.shape[1] + 1)


def pad_queries(q: np.ndarray) -> np.ndarray:
    """[m, d] -> [m, d+1] float32: the queries with a zero appended."""
    return large.query_rows(q, q.shape[1] + 1)


def exact_top(x: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Labels [m, k] of the exact inner-product top k of ``queries`` over ``x``; past
    ``LARGE_ABOVE`` rows a chunk at a time (``x`` may be a float16 memory map)."""
    n = x.shape[0]
    if n <= LARGE_ABOVE:
        return faiss.knn(queries, x, k, metric=faiss.METRIC_INNER_PRODUCT)[1]
    heap = faiss.ResultHeap(len(queries), k, keep_max=True)
    for start in range(0, n, ADD_CHUNK):
        part = np.ascontiguousarray(x[start : start + ADD_CHUNK], dtype=np.float32)
        d, i = faiss.knn(queries, part, min(k, len(part)), metric=faiss.METRIC_INNER_PRODUCT)
        heap.add_result(d, i + start)
    heap.finalize()
    return heap.I


def default_nlist(n: int) -> int:
    """~4*sqrt(n) inverted lists, at least 1 and never more than n/39 (FAISS wants >= 39
    training points per centroid for a stable k-means)."""
    return max(1, min(round(4 * math.sqrt(n)), n // 39))


class BaseIndex:
    """Exact inner-product top-k over a fixed set of vectors (labels = rows); read-only
    once built, so concurrent searches need no lock."""

    def __init__(
        self,
        index: Any,
        kind: str,
        dim: int,
        radius: float = 0.0,
        calibration: IndexCalibration | None = None,
        *,
        vectors: np.ndarray | None = None,
        rerank: int = 0,
        centres: np.ndarray | None = None,
    ) -> None:
        # Any: faiss's stubs type IVF attributes (nprobe, nlist) on subclasses only.
        self.index = index
        self.kind = kind
        self.dim = dim
        self.radius = radius
        self.calibration = calibration
        self.vectors = vectors
        """``ivf-pq``: the vectors (rows = labels) the candidates are re-scored against."""
        self.rerank = rerank
        """``ivf-pq``: candidates per query re-scored exactly."""
        self._keep: Any = None
        self._centres = centres
        """``ivf-pq``: the lists' centroids, for each probed list's term <q, centroid>."""

    def __len__(self) -> int:
        return int(self.index.ntotal)

    # --- construction --------------------------------------------------------------------
    @classmethod
    def empty(cls, dim: int) -> BaseIndex:
        return cls(faiss.IndexFlatIP(dim), "flat", dim)

    @staticmethod
    def _flat(dim: int, dtype: str) -> Any:
        if dtype == "float16":
            return faiss.IndexScalarQuantizer(
                dim, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT
            )
        return faiss.IndexFlatIP(dim)

    @classmethod
    def build(
        cls, x: np.ndarray, params: BaseParams, queries: np.ndarray | None = None
    ) -> BaseIndex:
        """Index ``x`` ([n, dim] float32, finite); IVF above ``exact_max_items``, its nprobe
        calibrated on ``queries`` when given."""
        n, dim = x.shape
        if n <= params.exact_max_items or n == 0:
            return cls._exact(x, params)
        if n > LARGE_ABOVE:
            return cls._build_large(x, params, queries)
        radius = float(np.sqrt(np.einsum("ij,ij->i", x, x).max())) or 1.0
        augmented = augment(x, radius)
        index = cls._new_ivf(augmented, params)
        index.add(augmented)  # labels 0..n-1: the array direct map below needs them
        del augmented
        index.set_direct_map_type(faiss.DirectMap.Array)  # type: ignore[attr-defined]
        base = cls(index, "ivf", dim, radius)
        if queries is not None and len(queries) and params.target_recall:
            cal = base._calibrate(x, queries, params)
            if 2 * cal.nprobe > cal.nlist:
                exact = cls._exact(x, params)
                exact.calibration = dataclasses.replace(cal, exact_instead=True)
                return exact
            base.calibration = cal
        return base

    @classmethod
    def _build_large(
        cls, x: np.ndarray, params: BaseParams, queries: np.ndarray | None
    ) -> BaseIndex:
        """IVF-PQ fast scan with an exact re-rank over more than ``LARGE_ABOVE`` items
        (app/index/large.py), a chunk at a time: ``x`` may be a float16 memory map (the
        serving cache's vectors), never copied whole, and is what the re-rank reads (the
        loaded index is given it again, :meth:`load`). k-means runs on a sample
        (``train_points_per_list`` per list, as FAISS would subsample). Calibration and the
        exact-instead rule are those of smaller indexes, at ``params.rerank`` candidates."""
        n, dim = x.shape
        radius = 0.0
        for start in range(0, n, ADD_CHUNK):
            part = np.asarray(x[start : start + ADD_CHUNK], dtype=np.float32)
            radius = max(radius, float(np.sqrt(np.einsum("ij,ij->i", part, part).max())))
        radius = radius or 1.0
        nlist = min(params.nlist or default_nlist(n), n)
        m = min(n, params.train_points_per_list * nlist)
        sample = np.sort(np.random.default_rng(0).choice(n, m, replace=False))
        index, quantizer, centres = large.build_pq(
            x,
            radius,
            nlist,
            sample,
            train_points_per_list=params.train_points_per_list,
            train_iters=params.train_iters,
            chunk=ADD_CHUNK,
        )
        set_probe(index, min(params.nprobe, nlist))
        base = cls(index, "ivf-pq", dim, radius, vectors=x, rerank=params.rerank, centres=centres)
        base._keep = quantizer  # the index points at it; faiss's wrapper does not hold it
        if queries is not None and len(queries) and params.target_recall:
            cal = base._calibrate(x, queries, params)
            if 2 * cal.nprobe > cal.nlist:
                flat = cls._flat(dim, params.dtype)
                flat.train(np.asarray(x[:1], dtype=np.float32))
                for start in range(0, n, ADD_CHUNK):
                    flat.add(np.asarray(x[start : start + ADD_CHUNK], dtype=np.float32))
                return cls(
                    flat, "flat", dim, calibration=dataclasses.replace(cal, exact_instead=True)
                )
            base.calibration = cal
        return base

    @classmethod
    def _exact(cls, x: np.ndarray, params: BaseParams) -> BaseIndex:
        index = cls._flat(x.shape[1], params.dtype)
        if len(x):
            index.train(x)  # a no-op for float32; fp16 needs none but FAISS asks for it
            index.add(x)
        return cls(index, "flat", x.shape[1])

    @staticmethod
    def _new_ivf(augmented: np.ndarray, params: BaseParams) -> Any:
        n, d1 = augmented.shape
        nlist = min(params.nlist or default_nlist(n), n)
        quantizer = faiss.IndexFlatL2(d1)
        if params.dtype == "float16":
            index: Any = faiss.IndexIVFScalarQuantizer(
                quantizer, d1, nlist, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_L2
            )
            index.by_residual = False  # store fp16(x) itself: the same values as flat fp16
        else:
            index = faiss.IndexIVFFlat(quantizer, d1, nlist, faiss.METRIC_L2)
        # (faiss's Python wrapper keeps `quantizer` alive as long as `index`.)
        index.cp.max_points_per_centroid = params.train_points_per_list
        index.cp.niter = params.train_iters
        index.train(augmented)
        index.nprobe = min(params.nprobe, nlist)
        return index

    def _calibrate(
        self, x: np.ndarray, queries: np.ndarray, params: BaseParams
    ) -> IndexCalibration:
        """Smallest nprobe (configured value, doubled up to all lists) whose recall@100 on
        ``queries`` reaches the target; sets it on the index."""
        assert params.target_recall is not None
        t = time.perf_counter()
        k = min(100, x.shape[0])
        truth = exact_top(x, queries, k)
        index = self.index
        nprobe, nlist = min(params.nprobe, index.nlist), index.nlist
        while True:
            set_probe(index, nprobe)
            _, found = self._approximate(queries, k)
            hits = sum(
                len(set(a.tolist()) & set(b.tolist())) for a, b in zip(truth, found, strict=True)
            )
            recall = hits / (k * len(queries))
            if recall >= params.target_recall or nprobe >= nlist:
                break
            nprobe = min(2 * nprobe, nlist)
        return IndexCalibration(
            target_recall=params.target_recall,
            nprobe=nprobe,
            nlist=nlist,
            recall=recall,
            k=k,
            queries=len(queries),
            seconds=time.perf_counter() - t,
        )

    # --- files ---------------------------------------------------------------------------
    def save(self, directory: Path) -> None:
        faiss.write_index(self.index, str(directory / INDEX_FILE))
        cal = None if self.calibration is None else dataclasses.asdict(self.calibration)
        meta = {"kind": self.kind, "dim": self.dim, "radius": self.radius, "calibration": cal}
        if self.kind == "ivf-pq":
            meta["rerank"] = self.rerank
            assert self._centres is not None
            np.save(directory / CENTROIDS_FILE, self._centres)
        (directory / META_FILE).write_text(json.dumps(meta))

    @classmethod
    def load(cls, directory: Path, vectors: np.ndarray | None = None) -> BaseIndex:
        """The index saved in ``directory``, memory-mapped read-only (an ``ivf-pq`` index's
        fast-scan lists are read into memory: FAISS maps only plain inverted lists).
        ``vectors``: the rows an ``ivf-pq`` index re-ranks against (those it was built
        from), required for that kind and ignored by the others."""
        meta = json.loads((directory / META_FILE).read_text())
        kind, dim = str(meta["kind"]), int(meta["dim"])
        flags = faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY
        index = faiss.read_index(str(directory / INDEX_FILE), flags)
        if kind == "ivf-pq" and (vectors is None or vectors.shape != (index.ntotal, dim)):
            got = None if vectors is None else vectors.shape
            raise ValueError(
                f"an ivf-pq index of {index.ntotal} x {dim} needs those vectors to re-rank "
                f"against, got {got}"
            )
        cal = meta.get("calibration")
        return cls(
            index,
            kind,
            dim,
            float(meta["radius"]),
            None if cal is None else IndexCalibration(**cal),
            vectors=vectors if kind == "ivf-pq" else None,
            rerank=int(meta.get("rerank", 0)),
            centres=np.load(directory / CENTROIDS_FILE) if kind == "ivf-pq" else None,
        )

    # --- reads ---------------------------------------------------------------------------
    @property
    def nprobe(self) -> int | None:
        return int(self.index.nprobe) if self.kind != "flat" else None

    @property
    def nlist(self) -> int | None:
        return int(self.index.nlist) if self.kind != "flat" else None

    def set_nprobe(self, nprobe: int) -> None:
        if self.kind != "flat":
            set_probe(self.index, min(nprobe, self.index.nlist))

    def reconstruct(self, labels: np.ndarray) -> np.ndarray:
        """[len(labels), dim] float32 stored vectors (float16 storage: the rounded values)."""
        if self.vectors is not None:  # ivf-pq: the rows re-ranked against, not the codes
            return np.asarray(self.vectors[labels], dtype=np.float32)
        out = np.asarray(self.index.reconstruct_batch(labels), dtype=np.float32)
        return out[:, : self.dim] if self.kind == "ivf" else out

    def _approximate(self, q: np.ndarray, fetch: int) -> tuple[np.ndarray, np.ndarray]:
        """What an approximate index finds for ``q``: ``ivf-pq`` re-ranked ([m, fetch]
        inner products, labels), ``ivf`` the list scan's (labels in the same order)."""
        if self.kind == "ivf-pq":
            assert self.vectors is not None and self._centres is not None
            return large.rerank(self.index, self._centres, self.vectors, q, self.rerank, fetch)
        return self.index.search(pad_queries(q), fetch)

    def search(self, q: np.ndarray, fetch: int) -> tuple[np.ndarray, np.ndarray]:
        """([m, fetch] inner products, [m, fetch] labels), best first, -1 padded (IVF: when
        the probed lists hold fewer candidates)."""
        if self.kind == "flat":
            scores, labels = self.index.search(q, fetch)
            return scores, labels
        if self.kind == "ivf-pq":
            return self._approximate(q, fetch)
        _, cand = self.index.search(pad_queries(q), fetch)
        scores = np.full(cand.shape, -np.inf, dtype=np.float32)
        for row in range(q.shape[0]):
            valid = cand[row] >= 0
            if valid.any():
                scores[row, valid] = self.reconstruct(cand[row][valid]) @ q[row]
        order = np.argsort(-scores, axis=1, kind="stable")
        labels = np.take_along_axis(cand, order, axis=1)
        top = np.take_along_axis(scores, order, axis=1)
        labels[~np.isfinite(top)] = -1
        return top, labels
