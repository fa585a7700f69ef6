"""Ranking metrics with INMO's definitions (binary relevance, full ranking).

Recall@K = hits / |test items of the user| (not capped); NDCG@K = DCG with gains
1/log2(rank + 1) over IDCG of min(|test_u|, K) relevant items.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def user_metrics(
    top: np.ndarray, targets: Sequence[np.ndarray], k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per-user (recall@k, ndcg@k) from top-k item lists ``top`` [b, >=k] and target sets."""
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    top = np.asarray(top)[:, :k]  # fewer than k columns when there are < k candidates
    sizes = np.fromiter((len(t) for t in targets), dtype=np.int64, count=len(targets))
    recall = np.zeros(len(targets))
    ndcg = np.zeros(len(targets))
    if top.size == 0 or sizes.sum() == 0:
        return recall, ndcg
    # One membership test for the whole batch (a per-user np.isin dominated evaluation
    # time): (row, item) pairs become int64 keys row * width + item + 1, the +1 keeping
    # any negative padding id from colliding with the previous row's items.
    flat = np.concatenate([np.asarray(t, dtype=np.int64) for t in targets])
    width = int(max(top.max(initial=0), flat.max(initial=0))) + 2
    rows = np.arange(len(targets), dtype=np.int64)
    target_keys = np.repeat(rows, sizes) * width + flat + 1
    top_keys = rows[:, None] * width + top.astype(np.int64) + 1
    hit = np.isin(top_keys, target_keys)
    has = sizes > 0
    recall[has] = hit[has].sum(1) / sizes[has]
    idcg = np.cumsum(disc)[np.minimum(sizes, k) - 1]
    ndcg[has] = (hit[has] * disc[: top.shape[1]]).sum(1) / idcg[has]
    return recall, ndcg


def ndcg_at_k_from_topk(top: np.ndarray, targets: Sequence[np.ndarray], k: int) -> float:
    return float(user_metrics(top, targets, k)[1].mean()) if len(targets) else 0.0
