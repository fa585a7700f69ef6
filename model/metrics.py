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
    recall = np.zeros(len(targets))
    ndcg = np.zeros(len(targets))
    for r, t in enumerate(targets):
        if len(t) == 0:
            continue
        hit = np.isin(top[r, :k], t)  # fewer than k columns when there are < k candidates
        recall[r] = hit.sum() / len(t)
        ndcg[r] = (hit * disc[: len(hit)]).sum() / disc[: min(len(t), k)].sum()
    return recall, ndcg


def ndcg_at_k_from_topk(top: np.ndarray, targets: Sequence[np.ndarray], k: int) -> float:
    return float(user_metrics(top, targets, k)[1].mean()) if len(targets) else 0.0
