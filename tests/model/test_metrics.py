"""INMO's metric definitions on hand-computed cases, and the evaluation slices."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from model.data.split import DomainSplit
from model.evaluation import _masked_topk, build_slices, evaluate, slice_inputs
from model.metrics import user_metrics
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
