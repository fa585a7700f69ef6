"""The seeded inductive split (METHOD.md section 3).

Per domain, the procedure is the one of the INMO correctness anchor
(``../shared/anchors/inmo-official/make_split.py``) so that, with the same k-core and
seed, our split of a domain *is* the anchor's split (same integer ids, same
train/val/test): ``numpy.random.RandomState(seed)`` draws a user permutation, an item
permutation, then one shuffle per user in id order; users with local id
``>= int(0.8 * n_users)`` and items with local id ``>= int(0.8 * n_items)`` are *new*.

Local ids: within a domain, users are ``0..n_users-1`` and items ``0..n_items-1``
(``user_ids[u]`` / ``item_ids[i]`` give the raw CSV ids).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class SplitConfig:
    """Controls of the split. Every key is documented with its default."""

    seed: int = 0
    """Seed of the per-domain RandomState (user/item permutations, per-user shuffles)."""
    k_core: int = 5
    """Per-domain iterative k-core threshold on users and items (0 or 1 disables it)."""
    min_rating: float | None = None
    """Keep only interactions with rating >= this (None: every row is a positive)."""
    new_ratio: float = 0.2
    """Share of each domain's users and of its items held out as *new* (inductive)."""
    overlap_ratio: float = 1.0
    """Share of multi-domain users that keep all their domains; the others keep one."""
    sparsify: dict[str, float] = field(default_factory=dict)
    """Domain -> share of that domain's training interactions kept (e.g. {"office": 0.3})."""


@dataclass
class DomainSplit:
    """One domain's split. Pair arrays are int64 of shape [n, 2] = (local user, local item).

    ``train`` is the *full* training input (new users' and new items' interactions
    included); the model is trained only on ``train_old()`` (old user x old item).
    """

    domain: str
    user_ids: list[str]
    item_ids: list[str]
    n_old_users: int
    n_old_items: int
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def new_user_mask(self) -> np.ndarray:
        """[n_users] bool, True for new (held-out) users."""
        return np.arange(self.n_users) >= self.n_old_users

    def new_item_mask(self) -> np.ndarray:
        """[n_items] bool, True for new (held-out) items."""
        return np.arange(self.n_items) >= self.n_old_items

    def old_pairs(self, pairs: np.ndarray) -> np.ndarray:
        """The rows of ``pairs`` whose user and item are both old."""
        keep = (pairs[:, 0] < self.n_old_users) & (pairs[:, 1] < self.n_old_items)
        return pairs[keep]

    def train_old(self) -> np.ndarray:
        """Training interactions the model may learn from (old users x old items)."""
        return self.old_pairs(self.train)


@dataclass
class InductiveSplit:
    """All domains' splits plus the cross-domain structure."""

    config: SplitConfig
    domains: dict[str, DomainSplit]

    def overlapping_users(self) -> set[str]:
        """Raw user ids present in more than one domain (after filtering)."""
        seen: dict[str, int] = {}
        for ds in self.domains.values():
            for u in ds.user_ids:
                seen[u] = seen.get(u, 0) + 1
        return {u for u, n in seen.items() if n > 1}

    def cross_domain_cold_users(self, domain: str) -> np.ndarray:
        """Local ids (in ``domain``) of the cross-domain cold-user slice.

        New users of ``domain`` that have at least one training interaction in another
        domain. They are evaluated with their whole ``domain`` history hidden, so only
        what they did elsewhere can be used.
        """
        ds = self.domains[domain]
        elsewhere: set[str] = set()
        for other, os_ in self.domains.items():
            if other == domain or len(os_.train) == 0:
                continue
            elsewhere.update(os_.user_ids[u] for u in np.unique(os_.train[:, 0]))
        new_users = np.flatnonzero(ds.new_user_mask())
        return np.array([u for u in new_users if ds.user_ids[u] in elsewhere], dtype=np.int64)
