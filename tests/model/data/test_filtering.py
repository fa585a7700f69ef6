"""Filtering controls: de-duplication, rating filter, k-core, overlap ratio, sparsify."""

from __future__ import annotations

import numpy as np
import pytest

from model.data.dataset import Interactions
from model.data.filtering import (
    apply_overlap_ratio,
    deduplicate,
    filter_min_rating,
    k_core,
    k_core_mask,
    sparsify_pairs,
)


def _inter(rows: list[tuple[str, str, str]], rating: list[float] | None = None) -> Interactions:
    def obj(xs: list[str]) -> np.ndarray:
        a = np.empty(len(xs), dtype=object)
        a[:] = xs
        return a

    return Interactions(
        user=obj([r[0] for r in rows]),
        item=obj([r[1] for r in rows]),
        domain=obj([r[2] for r in rows]),
        rating=None if rating is None else np.asarray(rating, dtype=np.float32),
    )


def _reference_k_core(pairs: set[tuple[str, str]], k: int) -> set[tuple[str, str]]:
    """The anchor's make_split.k_core, verbatim logic on dict-of-sets."""
    user_items: dict[str, set[str]] = {}
    item_users: dict[str, set[str]] = {}
    for u, i in pairs:
        user_items.setdefault(u, set()).add(i)
        item_users.setdefault(i, set()).add(u)
    changed = True
    while changed:
        changed = False
        for u in list(user_items):
            if len(user_items[u]) < k:
                changed = True
                for i in user_items[u]:
                    item_users[i].discard(u)
                del user_items[u]
        for i in list(item_users):
            if len(item_users[i]) < k:
                changed = True
                for u in item_users[i]:
                    user_items[u].discard(i)
                del item_users[i]
    return {(u, i) for u, its in user_items.items() for i in its}


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("k", [2, 5, 6])
def test_k_core_mask_matches_anchor_reference(seed: int, k: int) -> None:
    rng = np.random.default_rng(seed)
    n = 700  # about 8 pairs per user, skewed items: the cores are non-trivial
    users = rng.integers(0, 60, n)
    items = (rng.zipf(1.3, n) % 40).astype(np.int64)
    pairs = sorted({(f"u{u}", f"i{i}") for u, i in zip(users, items, strict=True)})
    u = np.array([p[0] for p in pairs], dtype=object)
    i = np.array([p[1] for p in pairs], dtype=object)
    mask = k_core_mask(u, i, k)
    got = {pairs[r] for r in np.flatnonzero(mask)}
    assert got == _reference_k_core(set(pairs), k)
    assert 0 < len(got) < len(pairs) or k == 2
    if got:  # every survivor has degree >= k on both sides
        su, si = np.unique(u[mask], return_counts=True), np.unique(i[mask], return_counts=True)
        assert su[1].min() >= k and si[1].min() >= k


def test_k_core_is_per_domain_and_k1_is_noop() -> None:
    rows = [(f"u{u}", f"a{i}", "a") for u in range(3) for i in range(3)]  # 3x3 block: 3-core
    rows += [("u0", "b0", "b"), ("u0", "b1", "b")]  # u0 has 2 items in b: not in b's 3-core
    inter = _inter(rows)
    out = k_core(inter, 3)
    assert set(out.domain.tolist()) == {"a"} and len(out) == 9
    assert k_core(inter, 1) is inter and k_core(inter, 0) is inter
    assert len(k_core(inter, 4)) == 0


def test_deduplicate_keeps_first_row() -> None:
    inter = _inter([("u", "i", "a"), ("v", "i", "a"), ("u", "i", "a")], rating=[1, 2, 3])
    out = deduplicate(inter)
    assert out.user.tolist() == ["u", "v"] and out.rating is not None
    assert out.rating.tolist() == [1, 2]
    clean = _inter([("u", "i", "a")])
    assert deduplicate(clean) is clean


def test_filter_min_rating() -> None:
    inter = _inter([("u", "i", "a"), ("v", "i", "a"), ("w", "i", "a")], rating=[3.9, 4.1, 5])
    assert filter_min_rating(inter, 4.1).user.tolist() == ["v", "w"]
    with pytest.raises(ValueError, match="rating column"):
        filter_min_rating(_inter([("u", "i", "a")]), 4)


def _multi(n_users: int = 40) -> Interactions:
    rows = []
    for u in range(n_users):
        rows += [(f"u{u:02d}", f"a{u}-{j}", "a") for j in range(2)]
        if u % 4 != 3:  # 3 in 4 users also in b
            rows += [(f"u{u:02d}", f"b{u}-{j}", "b") for j in range(3)]
        if u % 5 == 0:  # and some also in c
            rows.append((f"u{u:02d}", f"c{u}", "c"))
    return _inter(rows)


def _domains_of(inter: Interactions) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for u, d in zip(inter.user.tolist(), inter.domain.tolist(), strict=True):
        out.setdefault(u, set()).add(d)
    return out


@pytest.mark.parametrize("ratio", [0.0, 0.3, 0.5, 1.0])
def test_overlap_ratio(ratio: float) -> None:
    inter = _multi()
    before = _domains_of(inter)
    multi = [u for u, ds in before.items() if len(ds) > 1]
    out = apply_overlap_ratio(inter, ratio, seed=7)
    after = _domains_of(out)
    assert set(after) == set(before)  # nobody disappears
    still = [u for u in multi if len(after[u]) > 1]
    assert len(still) == round(ratio * len(multi))
    for u, ds in after.items():
        assert ds <= before[u]
        assert len(ds) in (1, len(before[u]))  # all domains or exactly one
        # the kept domain keeps all of that user's rows there
        for d in ds:
            n_in = int(((inter.user == u) & (inter.domain == d)).sum())
            assert int(((out.user == u) & (out.domain == d)).sum()) == n_in
    # seeded: same seed same result, another seed a different choice
    again = apply_overlap_ratio(inter, ratio, seed=7)
    assert again.user.tolist() == out.user.tolist() and again.item.tolist() == out.item.tolist()
    if 0 < ratio < 1:
        other = apply_overlap_ratio(inter, ratio, seed=8)
        assert other.item.tolist() != out.item.tolist()


def test_overlap_ratio_rejects_out_of_range() -> None:
    with pytest.raises(ValueError, match="overlap_ratio"):
        apply_overlap_ratio(_multi(), 1.5, 0)


def test_sparsify_pairs() -> None:
    pairs = np.stack([np.arange(100), np.arange(100) % 7], axis=1).astype(np.int64)
    out = sparsify_pairs(pairs, 0.3, seed=0, domain="office")
    assert out.shape == (30, 2) and out.dtype == np.int64
    assert np.all(np.diff(out[:, 0]) > 0)  # original order kept, no repeats
    assert np.array_equal(out[:, 1], out[:, 0] % 7)  # whole rows kept
    assert np.array_equal(out, sparsify_pairs(pairs, 0.3, seed=0, domain="office"))
    assert not np.array_equal(out, sparsify_pairs(pairs, 0.3, seed=0, domain="arts"))
    assert not np.array_equal(out, sparsify_pairs(pairs, 0.3, seed=1, domain="office"))
    full = sparsify_pairs(pairs, 1.0, seed=0)
    assert np.array_equal(full, pairs) and full is not pairs
    assert sparsify_pairs(pairs, 0.0, seed=0).shape == (0, 2)
    with pytest.raises(ValueError, match="share"):
        sparsify_pairs(pairs, -0.1, seed=0)
