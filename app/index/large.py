"""The FAISS index of a base of more than ``LARGE_ABOVE`` items (app/index/base.py): IVF
whose lists hold 4-bit product-quantised codes scanned with FAISS's fast scan, each
query's best ``rerank`` candidates then re-scored exactly against the serving vectors the
engine already maps (the cache's float16 or float32 file).

Why: at 1e7 items a query of the IVF float16 index computed a 193-number dot product for
every item of its probed lists (docs/results/scale.md), which made recommend CPU-bound on
2 cores. Fast scan compares a 4-bit code per pair of dimensions through SIMD table
look-ups, and the exact re-rank of a few hundred candidates gives back the scores and the
order of the stored vectors, so what is served is what a float16 IVF index would serve
whenever the true top k are among the candidates (recall is calibrated at build time, as
for the other indexes). The codes are 1 byte per 4 dimensions in the index file; the
vectors themselves are not stored twice.

The inner-product handling: k-means partitions the augmented vectors
``[x, sqrt(R^2 - |x|^2)]`` (all of length R) by L2, and the lists are scanned by inner
product with the zero-padded query, which ignores the augmenting coordinate. A query's
lists are those whose centroids, projected onto the sphere of radius R, are nearest to
``[q, 0]`` (the HNSW coarse quantizer holds the projections): the centroids of points on
that sphere lie inside it, at depths that vary by list, and plain L2 to them favoured the
tightest lists whatever the query. The codes encode each item's residual from its list's centroid (4-bit codes of
the vectors themselves ranked a real user's true top 100 so poorly that fewer than 30 %
were among the best 2,000 candidates at 1e7 items); a list's inner-product term
``<q, centroid>`` is computed here and handed to FAISS with the lists to scan
(``search_preassigned``), because FAISS would take the L2 quantizer's distance for it.
"""

from __future__ import annotations

from typing import Any

import faiss
import numpy as np

DIMS_PER_CODE = 2
"""Dimensions per 4-bit sub-quantizer (PQ ``M = coded_dim / DIMS_PER_CODE``)."""

COARSE_EF = 128
"""The HNSW coarse quantizer's search breadth, raised to ``nprobe`` when more lists are
probed: a graph walk returns at most that many lists, so with a fixed breadth "nprobe =
4096 of 4096" reached ~2,600 lists and recall stopped below target."""


def coded_dim(dim: int) -> int:
    """Length of the indexed rows: ``dim`` + the augmenting coordinate, padded with zeros to
    a multiple of ``DIMS_PER_CODE``."""
    return -(-(dim + 1) // DIMS_PER_CODE) * DIMS_PER_CODE


def index_rows(x: np.ndarray, radius: float, width: int) -> np.ndarray:
    """[n, dim] -> [n, width] float32: ``x``, ``sqrt(radius^2 - |x|^2)``, zeros."""
    x = np.asarray(x, dtype=np.float32)
    n, dim = x.shape
    out = np.zeros((n, width), dtype=np.float32)
    out[:, :dim] = x
    sq = np.einsum("ij,ij->i", x, x, dtype=np.float64)
    out[:, dim] = np.sqrt(np.maximum(radius * radius - sq, 0.0))
    return out


def query_rows(q: np.ndarray, width: int) -> np.ndarray:
    """[m, dim] -> [m, width]: the queries padded with zeros."""
    out = np.zeros((q.shape[0], width), dtype=np.float32)
    out[:, : q.shape[1]] = q
    return out


def set_probe(index: Any, nprobe: int) -> None:
    """``nprobe`` lists per query, and a search breadth of the HNSW coarse quantizer (large
    bases) that can return that many lists."""
    index.nprobe = nprobe
    quantizer = faiss.downcast_index(index.quantizer)
    if isinstance(quantizer, faiss.IndexHNSW):
        quantizer.hnsw.efSearch = max(COARSE_EF, nprobe)


def build_pq(
    x: np.ndarray,
    radius: float,
    nlist: int,
    sample: np.ndarray,
    *,
    train_points_per_list: int,
    train_iters: int,
    chunk: int,
) -> tuple[Any, Any, np.ndarray]:
    """An IVF-PQ fast-scan index over the rows of ``x`` (labels 0..n-1), trained on the
    rows ``sample``, filled ``chunk`` rows at a time; returns (index, its HNSW quantizer:
    the caller keeps it alive with the index, [nlist, width] centroids).

    Items are assigned to lists by a flat quantizer (one matrix product per chunk: on
    4096 lists about twice as fast as walking the HNSW graph, and exact); an HNSW graph
    over the centroids' projections then replaces it for queries (module docstring)."""
    width = coded_dim(x.shape[1])
    flat = faiss.IndexFlatL2(width)
    metric = faiss.METRIC_INNER_PRODUCT
    index = faiss.IndexIVFPQFastScan(flat, width, nlist, width // DIMS_PER_CODE, 4, metric)
    index.by_residual = True
    # FAISS makes an inner-product IVF's k-means spherical (unit-length centroids): over
    # the augmented vectors, all of length R, that undoes the transform (lists chosen by
    # the direction of [q, 0] alone, residuals as long as the items). This partition is
    # an L2 one.
    index.cp.spherical = False
    index.cp.max_points_per_centroid = train_points_per_list
    index.cp.niter = train_iters
    index.train(index_rows(x[sample], radius, width))
    for start in range(0, x.shape[0], chunk):
        index.add(index_rows(x[start : start + chunk], radius, width))
    centres = np.asarray(flat.reconstruct_n(0, nlist), dtype=np.float32)
    hnsw = faiss.IndexHNSWFlat(width, 32)
    hnsw.add(on_sphere(centres, radius))
    index.quantizer = hnsw
    set_probe(index, 1)
    return index, hnsw, centres


def on_sphere(centres: np.ndarray, radius: float) -> np.ndarray:
    """The centroids scaled to length ``radius`` (what the coarse quantizer searches)."""
    norms = np.linalg.norm(centres, axis=1, keepdims=True)
    return np.ascontiguousarray(centres * (radius / np.maximum(norms, 1e-30)), dtype=np.float32)


def rerank(
    index: Any, centres: np.ndarray, vectors: np.ndarray, q: np.ndarray, depth: int, fetch: int
) -> tuple[np.ndarray, np.ndarray]:
    """Top ``fetch`` ([m, fetch] inner products, labels) of the ``max(depth, fetch)`` best
    candidates of the fast scan, re-scored exactly against ``vectors`` (rows = labels);
    best first, -1 padded. ``centres``: the lists' centroids (:func:`build_pq`)."""
    want = max(depth, fetch)
    padded = query_rows(q, index.d)
    _, lists = index.quantizer.search(padded, index.nprobe)
    bias = np.einsum("mpd,md->mp", centres[np.maximum(lists, 0)], padded)
    _, cand = index.search_preassigned(padded, want, lists, bias.astype(np.float32))
    scores = np.full((q.shape[0], fetch), -np.inf, dtype=np.float32)
    labels = np.full((q.shape[0], fetch), -1, dtype=np.int64)
    for row in range(q.shape[0]):
        found = np.sort(cand[row][cand[row] >= 0])  # ascending rows: fewer page jumps
        if not len(found) and not q[row].any():
            # Fast scan returns nothing for a zero query (its look-up tables are scaled by
            # their range, 0 here), and the caller then widened its search to the whole
            # catalogue; every item scores 0, so any rows are exact search's answer.
            found = np.arange(min(want, vectors.shape[0]))
        if not len(found):
            continue
        exact = np.asarray(vectors[found], dtype=np.float32) @ q[row]
        top = np.argsort(-exact, kind="stable")[:fetch]
        scores[row, : len(top)] = exact[top]
        labels[row, : len(top)] = found[top]
    return scores, labels
