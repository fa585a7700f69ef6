"""Ranking metrics with INMO's definitions (binary relevance, full ranking), and the
catalogue metrics of a whole top-K table.

Recall@K = hits / |test items of the user| (not capped); NDCG@K = DCG with gains
1/log2(rank + 1) over IDCG of min(|test_u|, K) relevant items.

Top-K tables are [users, >= K] local item ids, best first; -1 marks an empty slot (a user
with fewer than K rankable items) and is never counted as an item.
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


LONG_TAIL_SHARE = 0.8
"""Share of a domain's items that form its long tail (those with the fewest training
interactions)."""


def long_tail_mask(
    degree: np.ndarray, item_ids: Sequence[str], share: float = LONG_TAIL_SHARE
) -> np.ndarray:
    """bool [n_items]: the floor(share * n) items with the fewest training interactions.

    Items are ordered by (training degree, item id) ascending, so ties are broken by item
    id and exactly floor(share * n) items are in the tail (80 % of 10 items = 8, whatever
    the degrees); the rest are the head.
    """
    n = len(degree)
    order = np.lexsort((np.asarray(item_ids, dtype=str), np.asarray(degree)))
    mask = np.zeros(n, dtype=bool)
    mask[order[: int(share * n)]] = True
    return mask


def coverage_at_k(top: np.ndarray, k: int, n_candidates: int) -> float:
    """Catalogue coverage@K: the number of distinct items that appear in at least one
    user's top-K, divided by the number of candidate items (-1 slots ignored)."""
    items = np.unique(np.asarray(top)[:, :k])
    return float((items >= 0).sum() / n_candidates) if n_candidates else 0.0


def long_tail_share_at_k(top: np.ndarray, k: int, tail: np.ndarray) -> float | None:
    """Long-tail share@K: the mean over users of the fraction of their top-K items that are
    in the long tail (``tail``, see :func:`long_tail_mask`). A user's fraction is over the
    items actually listed (fewer than K in a small domain; -1 slots ignored); users with
    an empty list are left out (None when every list is empty)."""
    top = np.asarray(top)[:, :k]
    valid = top >= 0
    listed = valid.sum(1)
    in_tail = (valid & tail[np.where(valid, top, 0)]).sum(1)
    has = listed > 0
    return float((in_tail[has] / listed[has]).mean()) if has.any() else None
