"""INMO's metric definitions on hand-computed cases, and the evaluation slices."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from model.data.split import DomainSplit, InductiveSplit, SplitConfig
from model.evaluation import _masked_topk, build_slices, evaluate, slice_inputs
from model.metrics import coverage_at_k, long_tail_mask, long_tail_share_at_k, user_metrics
from model.rankers import PopularRanker
from tests.model.toy import toy_split


def test_recall_and_ndcg_hand_case() -> None:
    top = np.array([[5, 1, 7, 2]])
    rec, ndcg = user_metrics(top, [np.array([1, 2, 9])], k=3)
    assert rec[0] == pytest.approx(1 / 3)  # one hit of three targets, not capped
    # hit at rank 2 -> 1/log2(3); IDCG over min(3, 3) = 1 + 1/log2(3) + 1/2
    assert ndcg[0] == pytest.approx((1 / math.log2(3)) / (1 + 1 / math.log2(3) + 0.5))
    rec4, _ = user_metrics(top, [np.array([1, 2, 9])], k=4)
    assert rec4[0] == pytest.approx(2 / 3)


def test_short_candidate_lists_are_handled() -> None:
    rec, ndcg = user_metrics(np.array([[3, 4]]), [np.array([4])], k=50)
    assert rec[0] == 1.0 and ndcg[0] == pytest.approx(1 / math.log2(3))


def test_masked_topk_pads_with_minus_one_when_k_exceeds_the_unseen_items() -> None:
    # 4 items; user 0 saw items 1 (train) and 2 (val); item 3 is no candidate
    pairs = np.array([[0, 1]])
    ds = DomainSplit("d", ["u0"], ["i0", "i1", "i2", "i3"], 1, 4, pairs, np.array([[0, 2]]), pairs)
    cand = np.array([True, True, True, False])
    top = _masked_topk(torch.tensor([[0.1, 0.9, 0.8, 0.7]]), np.array([0]), ds, cand, k=20)
    assert top.tolist() == [[0, -1, -1]]  # k clamped to 3 candidates; seen ones are never ranked
    rec, _ = user_metrics(top, [np.array([0])], k=20)
    assert rec[0] == 1.0


def test_slices_are_well_defined() -> None:
    split, _ = toy_split()
    ds = split.domains["a"]
    sl = {s.name: s for s in build_slices(split, "a")}
    assert set(sl["new_users"].users) <= set(range(ds.n_old_users, ds.n_users))
    assert not sl["new_items"].candidates[: ds.n_old_items].any()
    cold_in = slice_inputs(split, "a", "cold_items")["a"]
    assert not (cold_in[:, 1] >= ds.n_old_items).any()  # cold items have no interactions
    cd_in = slice_inputs(split, "a", "cd_cold")["a"]
    assert not np.isin(cd_in[:, 0], split.cross_domain_cold_users("a")).any()
    assert len(sl["cd_cold_users"].users) > 0
    buckets = [s for n, s in sl.items() if n.startswith("deg_")]
    assert sum(sum(len(t) for t in s.targets) for s in buckets) == len(ds.test)


def test_popular_baseline_scores_every_slice() -> None:
    split, _ = toy_split()
    res = evaluate(PopularRanker(split), split, ks=(20,))
    assert res["a"]["all"]["ndcg@20"] is not None and 0 <= res["a"]["all"]["ndcg@20"] <= 1


def test_long_tail_is_exactly_80_percent_ties_broken_by_item_id() -> None:
    # (degree, id) order: a(0) b(0) c(1) e(3) d(5) -> the first floor(0.8 * 5) = 4 are the tail
    tail = long_tail_mask(np.array([3, 0, 0, 5, 1]), ["e", "b", "a", "d", "c"])
    assert tail.tolist() == [True, True, True, False, True]
    # all degrees equal: the tail is the 8 smallest ids of 10
    tail = long_tail_mask(np.zeros(10, dtype=int), [f"i{9 - j}" for j in range(10)])
    assert tail.tolist() == [False, False] + [True] * 8


def test_coverage_and_long_tail_share_hand_case() -> None:
    top = np.array([[0, 1, 2], [1, 3, -1], [4, -1, -1]])  # -1: an empty slot
    tail = np.array([True, True, True, False, True])
    assert coverage_at_k(top, 1, 5) == pytest.approx(3 / 5)  # {0, 1, 4}
    assert coverage_at_k(top, 2, 5) == pytest.approx(4 / 5)  # {0, 1, 3, 4}
    assert coverage_at_k(top, 3, 10) == pytest.approx(5 / 10)  # 10 candidates
    # per user over the listed items: [0, 1] -> 1, [1, 3] -> 1/2, [4] -> 1
    assert long_tail_share_at_k(top, 2, tail) == pytest.approx((1 + 0.5 + 1) / 3)
    assert long_tail_share_at_k(top, 3, tail) == pytest.approx((1 + 0.5 + 1) / 3)
    assert long_tail_share_at_k(np.full((2, 3), -1), 3, tail) is None


class _FixedScores:
    """The same item scores for every user (a ranker for hand-computed top-K lists)."""

    name = "fixed"

    def __init__(self, item_scores: list[float]) -> None:
        self.item_scores = torch.tensor(item_scores)

    def serves(self, slice_name: str) -> bool:
        return True

    def bind(self, inputs: dict[str, np.ndarray]) -> _FixedScores:
        return self

    def scores(self, domain: str, users: np.ndarray, *, cross_domain: bool) -> torch.Tensor:
        return self.item_scores.repeat(len(users), 1)


def test_evaluate_reports_coverage_and_long_tail_on_the_all_slice() -> None:
    # 3 users x 5 items; training degrees i0 2, i1 2, i2 1, i3 1, i4 0, so the tail
    # (4 of 5, ties by id) is i4, i2, i3, i0 and the head is i1.
    train = np.array([[0, 0], [1, 0], [0, 1], [1, 1], [2, 3], [2, 2]])
    test = np.array([[0, 2], [1, 3], [2, 4]])
    ds = DomainSplit("d", ["u0", "u1", "u2"], [f"i{j}" for j in range(5)], 3, 4, train,
                     np.empty((0, 2), dtype=np.int64), test)  # fmt: skip
    split = InductiveSplit(SplitConfig(), {"d": ds})
    # scores i0 > i1 > ... > i4, seen items masked: u0, u1 -> [i2, i3, i4]; u2 -> [i0, i1, i4]
    row = evaluate(_FixedScores([5, 4, 3, 2, 1]), split, ks=(1, 2, 10))["d"]["all"]
    assert row["coverage@1"] == pytest.approx(2 / 5)  # {i2, i0}
    assert row["coverage@2"] == pytest.approx(4 / 5)  # {i2, i3, i0, i1}
    assert row["coverage@10"] == pytest.approx(5 / 5)
    assert row["long_tail@1"] == pytest.approx(1.0)
    assert row["long_tail@2"] == pytest.approx((1 + 1 + 0.5) / 3)
    assert row["long_tail@10"] == pytest.approx((1 + 1 + 2 / 3) / 3)  # 3 listed items each
    assert "coverage@10" not in evaluate(_FixedScores([5, 4, 3, 2, 1]), split)["d"]["new_users"]
