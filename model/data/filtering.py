"""Filtering controls applied before the split (docs/evaluation.md).

All functions are pure: they return new :class:`Interactions` (or arrays) and keep the
input row order, so that a seeded pipeline gives the same rows on every run. Seeded
choices use ``numpy.random.RandomState``, whose streams numpy keeps stable across
versions (``Generator`` streams may change between releases).
"""

from __future__ import annotations

import zlib

import numpy as np

from model.data.dataset import Interactions


def deduplicate(inter: Interactions) -> Interactions:
    """Keep the first row of each (user, item) pair. Item ids are unique across domains,
    so this is the per-domain de-duplication the split assumes."""
    seen: set[tuple[str, str]] = set()
    keep = np.zeros(len(inter), dtype=bool)
    for r, key in enumerate(zip(inter.user.tolist(), inter.item.tolist(), strict=True)):
        if key not in seen:
            seen.add(key)
            keep[r] = True
    return inter if keep.all() else inter.select(keep)


def filter_min_rating(inter: Interactions, min_rating: float) -> Interactions:
    """Rows with ``rating >= min_rating`` (the positives). Raises ValueError without ratings.

    The comparison is done in float32, the storage type of ``rating``, so that a
    threshold such as 4.1 keeps a rating written as 4.1.
    """
    if inter.rating is None:
        raise ValueError("min_rating needs a rating column, and these interactions have none")
    return inter.select(inter.rating >= np.float32(min_rating))


def k_core_mask(user: np.ndarray, item: np.ndarray, k: int) -> np.ndarray:
    """Boolean mask [n] of the rows in the iterative k-core of one bipartite graph.

    ``user``/``item`` are the rows' (user, item) ids (any hashable-sortable dtype), pairs
    assumed distinct. Users with fewer than ``k`` items are dropped, then items with fewer
    than ``k`` users, and so on until nothing changes: the same result as the anchor's
    ``make_split.k_core`` (the k-core is the unique largest subgraph where every user and
    item has degree >= k, so the peeling order does not matter). ``k <= 1`` keeps all.
    """
    n = len(user)
    alive = np.ones(n, dtype=bool)
    if k <= 1 or n == 0:
        return alive
    _, u = np.unique(user, return_inverse=True)
    _, i = np.unique(item, return_inverse=True)
    u, i = u.ravel(), i.ravel()
    n_u, n_i = int(u.max()) + 1, int(i.max()) + 1
    while True:
        before = int(alive.sum())
        # Degrees count only rows still alive; a dead row counts for nobody.
        u_deg = np.bincount(u[alive], minlength=n_u)
        alive &= u_deg[u] >= k
        i_deg = np.bincount(i[alive], minlength=n_i)
        alive &= i_deg[i] >= k
        if int(alive.sum()) == before:
            return alive


def k_core(inter: Interactions, k: int = 5) -> Interactions:
    """Per-domain iterative k-core (each domain's user-item graph filtered on its own).

    A user may survive in one domain and be dropped from another. ``k <= 1`` is a no-op.
    """
    if k <= 1 or len(inter) == 0:
        return inter
    keep = np.zeros(len(inter), dtype=bool)
    for d in sorted(set(inter.domain.tolist())):
        rows = np.flatnonzero(inter.domain == d)
        keep[rows] = k_core_mask(inter.user[rows], inter.item[rows], k)
    return inter.select(keep)


def apply_overlap_ratio(inter: Interactions, ratio: float, seed: int) -> Interactions:
    """Make only a seeded share ``ratio`` of the multi-domain users overlapping.

    Users present in more than one domain are sorted by id and permuted with
    ``RandomState(seed)``; the first ``round(ratio * n)`` keep all their domains. Each
    other one keeps one domain drawn uniformly (same RandomState, in sorted user order)
    among the domains it has; its rows in the other domains are dropped. Users of a
    single domain are untouched. Applied *before* the k-core, so the overlap measured
    after filtering is close to, not exactly, ``ratio``.
    """
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"overlap_ratio must be in [0, 1], got {ratio}")
    if ratio == 1.0 or len(inter) == 0:
        return inter
    user_domains: dict[str, set[str]] = {}
    for u, d in zip(inter.user.tolist(), inter.domain.tolist(), strict=True):
        user_domains.setdefault(u, set()).add(d)
    multi = sorted(u for u, ds in user_domains.items() if len(ds) > 1)
    rng = np.random.RandomState(seed)
    order = rng.permutation(len(multi))
    n_keep = round(ratio * len(multi))
    restricted = sorted(multi[j] for j in order[n_keep:])
    only: dict[str, str] = {}
    for u in restricted:
        ds = sorted(user_domains[u])
        only[u] = ds[rng.randint(len(ds))]
    keep = np.fromiter(
        (
            only.get(u, d) == d
            for u, d in zip(inter.user.tolist(), inter.domain.tolist(), strict=True)
        ),
        dtype=bool,
        count=len(inter),
    )
    return inter.select(keep)


def sparsify_pairs(pairs: np.ndarray, keep: float, seed: int, domain: str = "") -> np.ndarray:
    """A seeded share ``keep`` of the rows of ``pairs`` ([n, 2] int64), in their order.

    ``round(keep * n)`` rows are drawn uniformly without replacement with a RandomState
    seeded by ``(seed, crc32(domain))``, so two domains sparsified with the same seed get
    independent draws and the choice does not depend on Python's hash randomisation.
    Used by the split on a domain's *training* pairs only (val/test stay complete so the
    evaluation is unchanged; users may be left with no training pair).
    """
    if not 0.0 <= keep <= 1.0:
        raise ValueError(f"sparsify share must be in [0, 1], got {keep}")
    n = len(pairs)
    n_keep = round(keep * n)
    if n_keep == n:
        return pairs.copy()
    rng = np.random.RandomState([seed & 0xFFFFFFFF, zlib.crc32(domain.encode("utf-8"))])
    rows = np.sort(rng.choice(n, size=n_keep, replace=False))
    return pairs[rows]
