"""The gate's rule on made-up per-user values, and the window split of users who appear only
in the window (model/retrain_gate.py, model/retrain.py). The end-to-end scenarios are
tests/app/learning/test_retrain_gate.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model.data.dataset import Dataset, Interactions, ItemRecord
from model.retrain import window_split
from model.retrain_gate import Gate, gate


def _scored(values: np.ndarray, domain: str = "office") -> tuple[dict, dict]:  # type: ignore[type-arg]
    results = {domain: {"all": {"n_users": float(len(values)), "ndcg@20": float(values.mean())}}}
    users = np.arange(len(values))
    return results, {(domain, "all"): {"users": users, "ndcg@20": values}}


def _decide(cand: np.ndarray, cur: np.ndarray, **kw: float) -> object:
    (rc, uc), (rp, up) = _scored(cand), _scored(cur)
    return gate(rc, rp, Gate(**kw), uc, up)  # type: ignore[arg-type]


def test_a_tie_keeps_the_current_version() -> None:
    v = np.random.default_rng(0).random(200)
    d = _decide(v, v.copy())
    assert not d.promote and d.mean_difference == 0.0 and "a tie" in d.reason  # type: ignore[attr-defined]


def test_a_clear_gain_is_promoted_and_noise_is_not() -> None:
    rng = np.random.default_rng(1)
    cur = rng.random(200)
    better = _decide(cur + 0.05 + 0.05 * rng.standard_normal(200), cur)
    assert better.promote and better.interval[0] > 0  # type: ignore[attr-defined]
    # a small mean gain within noise: its interval straddles 0, refused unless tolerated
    noisy = cur + 0.005 + 0.3 * rng.standard_normal(200)
    refused = _decide(noisy, cur)
    assert not refused.promote and "not significant" in refused.reason  # type: ignore[attr-defined]
    assert refused.mean_difference > 0 and refused.interval[0] < 0  # type: ignore[attr-defined]
    assert _decide(noisy, cur, tolerance=0.2).promote  # type: ignore[attr-defined]
    # seeded: the same data gives the same interval
    assert _decide(noisy, cur).interval == refused.interval  # type: ignore[attr-defined]


def test_too_few_users_and_a_margin_refuse() -> None:
    cur = np.zeros(10)
    d = _decide(cur + 0.5, cur)
    assert not d.promote and d.users == 10 and "too few" in d.reason  # type: ignore[attr-defined]
    assert _decide(cur + 0.5, cur, min_users=10).promote  # type: ignore[attr-defined]
    assert not _decide(cur + 0.5, cur, min_users=10, margin=0.6).promote  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="confidence"):
        Gate(confidence=0.2)


def test_window_only_users_are_scored_from_their_own_earlier_rows() -> None:
    """u-old bought a before the cutoff (10) and b, c after; u-new appears only after it
    with a, b, c, d (time order); u-once has a single row there (left out, counted)."""
    rows = [
        ("u-old", "a", 5), ("u-old", "b", 11), ("u-old", "c", 12),
        ("u-new", "c", 13), ("u-new", "a", 11), ("u-new", "d", 14), ("u-new", "b", 12),
        ("u-once", "a", 15), ("u-x", "d", 1),
    ]  # fmt: skip
    inter = Interactions(
        user=np.array([r[0] for r in rows], dtype=object),
        item=np.array([r[1] for r in rows], dtype=object),
        domain=np.array(["office"] * len(rows), dtype=object),
        timestamp=np.array([r[2] for r in rows], dtype=np.int64),
    )
    items = {i: ItemRecord(i, "office", i) for i in "abcd"}
    w = window_split(Dataset(Path("."), items, inter), cutoff=10, domains=["office"])
    ds = w.split.domains["office"]

    def named(pairs: np.ndarray) -> set[tuple[str, str]]:
        return {(ds.user_ids[u], ds.item_ids[i]) for u, i in pairs}

    # u-new: first half of its items in time order (a, b) is input, the rest (c, d) targets
    assert named(ds.train) == {("u-old", "a"), ("u-x", "d"), ("u-new", "a"), ("u-new", "b")}
    assert named(ds.test) == {("u-old", "b"), ("u-old", "c"), ("u-new", "c"), ("u-new", "d")}
    assert w.counts["office"] == {
        "old_users": 1, "old_targets": 2, "new_users": 1, "new_inputs": 2,
        "left_out_users": 1, "left_out_rows": 1, "new_targets": 2,
    }  # fmt: skip
    assert ds.n_old_users == 2  # u-old, u-x: users of the window's own slices stay apart
