"""The online metrics from made-up counters (no store): Wilson intervals against known
values, the MRR's normal-approximation interval, coverage, and the empty case."""

from __future__ import annotations

import math

import pytest

from app.feedback.metrics import mean_interval, summarise, wilson
from app.store.online import FeedbackState, OnlineCounts, RecommendationRecord, apply_feedback


def test_wilson_matches_known_intervals() -> None:
    # scipy.stats.binomtest(k, n).proportion_ci(method="wilson")
    assert wilson(81, 263) == pytest.approx((0.2552885198782742, 0.36620957698280004), abs=1e-12)
    assert wilson(3, 40) == pytest.approx((0.025836025774588198, 0.19864233524310543), abs=1e-12)
    lo, hi = wilson(0, 10)
    assert lo == 0.0 and 0 < hi < 0.31
    assert wilson(0, 0) == (0.0, 1.0)


def test_mrr_interval_is_the_normal_approximation() -> None:
    values = [1.0, 0.5, 0.0, 0.0, 1 / 3]
    n, total, sq = len(values), sum(values), sum(v * v for v in values)
    mean = total / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    expect = (
        max(0.0, mean - 1.959963984540054 * sd / math.sqrt(n)),
        mean + 1.959963984540054 * sd / math.sqrt(n),
    )
    assert mean_interval(total, sq, n) == pytest.approx(expect)
    assert mean_interval(1.0, 1.0, 1) == (0.0, 1.0)


def test_summarise_made_up_counts() -> None:
    counts = OnlineCounts(
        "v2",
        "office",
        recommendations=500,
        observed=263,
        impressions=2630,
        clicks=81,
        hits=81,
        rr_sum=40.5,
        rr_sq_sum=30.0,
        events={"impression": 2630, "click": 81, "purchase": 7},
        items_shown=50,
        catalogue_size=200,
    )
    m = summarise(counts, {"click", "purchase"})
    assert (m.version, m.domain, m.recommendations) == ("v2", "office", 500)
    assert m.ctr == pytest.approx(81 / 2630) and m.ctr_ci == wilson(81, 2630)
    assert m.hit_rate == pytest.approx(81 / 263)
    assert m.hit_rate_ci == pytest.approx((0.2552885198782742, 0.36620957698280004))
    assert m.mrr == pytest.approx(40.5 / 263) and m.mrr_ci == mean_interval(40.5, 30.0, 263)
    assert m.coverage == 0.25 and m.positives == {"click": 81, "purchase": 7}
    empty = summarise(OnlineCounts("v1", "arts"))
    assert (empty.ctr, empty.ctr_ci, empty.mrr, empty.coverage) == (0.0, (0.0, 1.0), 0.0, 0.0)


def test_one_recommendations_events_add_up_to_its_reciprocal_rank() -> None:
    record = RecommendationRecord(
        "r", "u", None, "d", "v", 0.0, (("a", "model"), ("b", "model"), ("c", "model"))
    )
    state = FeedbackState()
    delta, new = apply_feedback(record, state, [("c", "click"), ("c", "impression")], {"click"})
    assert new == [0, 1]
    assert delta == {
        "event:click": 1,
        "event:impression": 1,
        "impressions": 1,
        "clicks": 1,
        "observed": 1,
        "hits": 1,
        "rr_sum": pytest.approx(1 / 3),
        "rr_sq_sum": pytest.approx(1 / 9),
    }
    delta, _ = apply_feedback(record, state, [("a", "click")], {"click"})
    assert delta["rr_sum"] == pytest.approx(1 - 1 / 3) and "hits" not in delta
    assert apply_feedback(record, state, [("a", "click")], {"click"}) == ({}, [])
    with pytest.raises(ValueError, match="not in recommendation"):
        apply_feedback(record, state, [("zz", "click")], {"click"})
