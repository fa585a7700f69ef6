"""The seeded inductive split (docs/evaluation.md).

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

import logging
import zlib
from dataclasses import dataclass, field

import numpy as np

from model.data.dataset import Dataset, DatasetError
from model.data.filtering import (
    apply_overlap_ratio,
    deduplicate,
    filter_min_rating,
    k_core,
    sparsify_pairs,
)

log = logging.getLogger(__name__)

SPLIT_RATIO = (0.7, 0.1, 0.2)
"""Per-user train/val/test shares: ``n_train = int(0.7 n)``, ``n_test = int(0.2 n)``,
val = the rest (the anchor's rule; val gets the rounding remainder)."""

PSEUDO_COLD_SHARE = 0.2
"""Share of a domain's eligible old users held out as pseudo-cold validation users."""
PSEUDO_COLD_MAX = 2000
"""At most this many pseudo-cold validation users per domain."""


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

    def validate(self) -> None:
        """Raise ValueError naming the first out-of-range control."""
        if not 0 <= self.seed < 2**32:
            raise ValueError(f"seed must be in [0, 2**32), got {self.seed}")
        if self.k_core < 0:
            raise ValueError(f"k_core must be >= 0, got {self.k_core}")
        if not 0.0 <= self.new_ratio < 1.0:
            raise ValueError(f"new_ratio must be in [0, 1), got {self.new_ratio}")
        if not 0.0 <= self.overlap_ratio <= 1.0:
            raise ValueError(f"overlap_ratio must be in [0, 1], got {self.overlap_ratio}")
        for d, share in self.sparsify.items():
            if not 0.0 <= share <= 1.0:
                raise ValueError(f"sparsify share of {d!r} must be in [0, 1], got {share}")


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

    def test_population(self) -> np.ndarray:
        """[n_users] bool: users the test split scores (they have test rows).

        Validation is scored on these users only. On sparse data the per-user 70/10/20
        rounding gives users with 3-4 interactions validation rows but no test rows, so
        unrestricted validation is a lighter population than test (for whom most-popular
        is hard to beat) and weights fitted on it serve another one. Only who has test rows
        is read, never which items they are.
        """
        mask = np.zeros(self.n_users, dtype=bool)
        mask[np.unique(self.test[:, 0])] = True
        return mask


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
        elsewhere = self._elsewhere(domain)
        new_users = np.flatnonzero(ds.new_user_mask())
        return np.array([u for u in new_users if ds.user_ids[u] in elsewhere], dtype=np.int64)

    def _elsewhere(self, domain: str) -> set[str]:
        """Raw ids of users with training interactions in a domain other than ``domain``."""
        out: set[str] = set()
        for other, os_ in self.domains.items():
            if other != domain and len(os_.train):
                out.update(os_.user_ids[u] for u in np.unique(os_.train[:, 0]))
        return out

    def pseudo_cold_users(self, domain: str) -> np.ndarray:
        """Local ids (in ``domain``) of its pseudo-cold validation users, sorted.

        Old users of ``domain`` with training interactions there and in another domain; a
        seeded share (``PSEUDO_COLD_SHARE``, at most ``PSEUDO_COLD_MAX``). Validation
        scores them with their ``domain`` history hidden, standing in for users new to
        the domain (real ones are few: about 20 per domain of amazon-food-kitchen's
        5-core validation); the cross-domain mapping (model.bridgefit) is never trained
        on them.
        """
        ds = self.domains[domain]
        elsewhere = self._elsewhere(domain)
        own = np.unique(ds.train[:, 0]) if len(ds.train) else np.empty(0, dtype=np.int64)
        eligible = np.array(
            [u for u in own if u < ds.n_old_users and ds.user_ids[u] in elsewhere],
            dtype=np.int64,
        )
        if not len(eligible):
            return eligible
        n = min(PSEUDO_COLD_MAX, max(1, round(PSEUDO_COLD_SHARE * len(eligible))))
        rng = np.random.default_rng((self.config.seed, zlib.crc32(domain.encode())))
        return np.sort(rng.choice(eligible, n, replace=False))


def split_domain(
    domain: str,
    users: list[str],
    items: list[str],
    *,
    seed: int,
    new_ratio: float = 0.2,
) -> DomainSplit:
    """Split one domain exactly like the anchor's ``make_split.py`` (after its k-core).

    ``users``/``items`` are the domain's distinct (user, item) pairs as two parallel lists
    of raw ids. With a fresh ``RandomState(seed)``:

    1. raw users sorted, raw items sorted; local user id ``j`` is
       ``sorted_users[user_perm[j]]`` for ``user_perm = rng.permutation(n_users)``, then
       items likewise with the next draw (so "the last ``new_ratio`` of ids" is a uniform
       random share of users/items);
    2. ``n_old = int((1 - new_ratio) * n)`` for users and for items;
    3. guard: if item ``n_old_items - 1`` has no interaction with an old user, it swaps
       ids with the largest lower item id that has one (the INMO reader infers
       ``n_items`` from the largest id it sees in the old-only files);
    4. per user in id order: its item ids sorted, shuffled with the same rng,
       first ``int(0.7 n)`` -> train, last ``int(0.2 n)`` -> test, the rest -> val.

    Pair arrays keep that order (users ascending, each user's items in shuffled order),
    which is what the INMO-format export writes, byte for byte.
    """
    user_items: dict[str, list[str]] = {}
    item_users: dict[str, list[str]] = {}
    for raw_u, raw_i in zip(users, items, strict=True):
        user_items.setdefault(raw_u, []).append(raw_i)
        item_users.setdefault(raw_i, []).append(raw_u)
    raw_users, raw_items = sorted(user_items), sorted(item_users)
    n_users, n_items = len(raw_users), len(raw_items)
    rng = np.random.RandomState(seed)
    user_perm = rng.permutation(n_users)
    item_perm = rng.permutation(n_items)
    user_ids = [raw_users[p] for p in user_perm]
    item_ids = [raw_items[p] for p in item_perm]
    n_old_users = int((1.0 - new_ratio) * n_users)
    n_old_items = int((1.0 - new_ratio) * n_items)

    user_local = {raw: j for j, raw in enumerate(user_ids)}
    if n_old_items >= 1:
        # has_old[i]: item i has at least one old user (over all its pairs, as the anchor).
        has_old = np.zeros(n_items, dtype=bool)
        item_local0 = {raw: j for j, raw in enumerate(item_ids)}
        for raw_i, us in item_users.items():
            has_old[item_local0[raw_i]] = any(user_local[u] < n_old_users for u in us)
        last = n_old_items - 1
        if not has_old[last]:
            cands = np.flatnonzero(has_old[:last])
            if len(cands):
                c = int(cands[-1])
                item_ids[c], item_ids[last] = item_ids[last], item_ids[c]
                log.info("%s: guard swapped items %r and %r", domain, item_ids[c], item_ids[last])
    item_local = {raw: j for j, raw in enumerate(item_ids)}

    parts: tuple[list[int], list[int], list[int]] = ([], [], [])  # flat (u, i, u, i, ...)
    for u in range(n_users):
        mine = sorted(item_local[i] for i in user_items[user_ids[u]])
        rng.shuffle(mine)  # a list, as the anchor: same Fisher-Yates draws as an array
        n = len(mine)
        n_train, n_test = int(n * SPLIT_RATIO[0]), int(n * SPLIT_RATIO[2])
        # Explicit bounds: with n_test == 0 (no k-core) the anchor's mine[-0:] would be all.
        for flat, chunk in zip(
            parts, (mine[:n_train], mine[n_train : n - n_test], mine[n - n_test :]), strict=True
        ):
            for i in chunk:
                flat.extend((u, i))
    train, val, test = (np.asarray(p, dtype=np.int64).reshape(-1, 2) for p in parts)
    return DomainSplit(
        domain=domain,
        user_ids=user_ids,
        item_ids=item_ids,
        n_old_users=n_old_users,
        n_old_items=n_old_items,
        train=train,
        val=val,
        test=test,
    )


def build_split(dataset: Dataset, config: SplitConfig | None = None) -> InductiveSplit:
    """The seeded inductive split of ``dataset`` (docs/evaluation.md).

    Order: de-duplicate pairs -> ``min_rating`` -> ``overlap_ratio`` (seeded with
    ``config.seed``) -> per-domain ``k_core`` -> per domain, in sorted name order,
    :func:`split_domain` with a fresh ``RandomState(config.seed)`` -> ``sparsify``: for each
    domain in ``config.sparsify``, only a seeded share of its *full* training pairs is kept
    (:func:`~model.data.filtering.sparsify_pairs`; new users'/items' training inputs are
    thinned too, val/test untouched).

    Domains left without interactions after filtering are skipped (logged). Raises
    ValueError for an invalid config (including a ``sparsify`` domain the dataset does not
    have) and DatasetError when no interaction survives the filters.
    """
    config = config or SplitConfig()
    config.validate()
    unknown = sorted(set(config.sparsify) - set(dataset.domains))
    if unknown:
        raise ValueError(
            f"sparsify names unknown domain(s) {', '.join(unknown)}; "
            f"the dataset has {', '.join(dataset.domains)}"
        )
    inter = deduplicate(dataset.interactions)
    if config.min_rating is not None:
        inter = filter_min_rating(inter, config.min_rating)
    inter = apply_overlap_ratio(inter, config.overlap_ratio, config.seed)
    inter = k_core(inter, config.k_core)
    if len(inter) == 0:
        raise DatasetError(
            dataset.root,
            None,
            f"no interaction left after filtering (min_rating={config.min_rating}, "
            f"overlap_ratio={config.overlap_ratio}, k_core={config.k_core})",
        )
    domains: dict[str, DomainSplit] = {}
    # items.csv domains, plus any only the interactions name (hand-built Dataset objects).
    for d in sorted(set(dataset.domains) | set(inter.domain.tolist())):
        rows = np.flatnonzero(inter.domain == d)
        if len(rows) == 0:
            log.warning("domain %r has no interaction left after filtering; skipped", d)
            continue
        ds = split_domain(
            d,
            inter.user[rows].tolist(),
            inter.item[rows].tolist(),
            seed=config.seed,
            new_ratio=config.new_ratio,
        )
        if d in config.sparsify:
            ds.train = sparsify_pairs(ds.train, config.sparsify[d], config.seed, d)
        domains[d] = ds
    return InductiveSplit(config=config, domains=domains)
