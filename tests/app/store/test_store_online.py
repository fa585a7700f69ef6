"""Served recommendations, feedback and online counters on both stores (SQLite, a real
Redis): records kept and bounded, feedback counted once per pair, erasure removes them."""

from __future__ import annotations

import time

from app.store.base import Store
from app.store.online import RecommendationRecord, hour_of

POSITIVE = frozenset({"click", "add-to-cart", "purchase"})


def record(
    rec_id: str, user: str | None = "u1", *, version: str = "v1", at: float | None = None
) -> RecommendationRecord:
    return RecommendationRecord(
        rec_id,
        user,
        None if user else "s1",
        "office",
        version,
        time.time() if at is None else at,
        (("o1", "model"), ("o2", "model"), ("o3", "popular")),
        catalogue_size=10,
    )


def test_records_round_trip_and_feedback_counts_once_per_pair(store: Store) -> None:
    assert store.put_recommendations([record("r1"), record("r2", None)], 3600, 100) == 2
    found = store.get_recommendation("r1")
    assert found is not None and found.record == record("r1", at=found.record.created_at)
    assert store.get_recommendation("nope") is None

    events = [("o1", "impression"), ("o2", "impression"), ("o2", "click"), ("o2", "purchase")]
    assert store.add_feedback("r1", events, POSITIVE) == [0, 1, 2, 3]
    # the same events again (a retry) change nothing; a click on rank 1 improves the rank
    assert store.add_feedback("r1", events, POSITIVE) == []
    assert store.add_feedback("r2", [("o3", "click")], POSITIVE) == [0]
    assert store.add_feedback("gone", [("o3", "click")], POSITIVE) is None

    c = store.online_counts("v1", "office")
    assert (c.recommendations, c.observed, c.impressions, c.clicks, c.hits) == (2, 2, 3, 2, 2)
    assert c.events == {"impression": 2, "click": 2, "purchase": 1}
    # reciprocal ranks: r1 best positive rank 2 -> 1/2; r2 rank 3 -> 1/3
    assert abs(c.rr_sum - (1 / 2 + 1 / 3)) < 1e-9
    assert abs(c.rr_sq_sum - (1 / 4 + 1 / 9)) < 1e-9
    assert (c.items_shown, c.catalogue_size) == (3, 10)
    assert store.online_versions() == [("v1", "office")]

    store.add_feedback("r1", [("o1", "click")], POSITIVE)
    c = store.online_counts("v1", "office")
    assert abs(c.rr_sum - (1 + 1 / 3)) < 1e-9 and c.hits == 2
    stored = store.get_recommendation("r1")
    assert stored is not None and (1, "click") in stored.feedback.events()

    hours = store.online_hourly("v1", "office", time.time() - 7200)
    assert [h.hour for h in hours] == [hour_of(time.time())]
    assert hours[0].counts.recommendations == 2 and hours[0].counts.clicks == 3


def test_records_are_bounded_by_number_and_age(store: Store) -> None:
    store.put_recommendations([record(f"r{k}") for k in range(5)], 3600, 3)
    assert [store.get_recommendation(f"r{k}") is not None for k in range(5)] == [
        False,
        False,
        True,
        True,
        True,
    ]
    store.put_recommendations([record("short")], 0.05, 100)
    time.sleep(0.2)
    assert store.get_recommendation("short") is None
    assert store.add_feedback("short", [("o1", "click")], POSITIVE) is None


def test_erasure_removes_the_users_records_and_later_writes_of_older_ones(store: Store) -> None:
    before = time.time()
    store.put_recommendations([record("mine"), record("other", "u2")], 3600, 100)
    store.erase_user("u1", time.time())
    assert store.get_recommendation("mine") is None
    assert store.get_recommendation("other") is not None
    # a record served before the erasure but written after it (queued) is not kept
    assert store.put_recommendations([record("queued", at=before)], 3600, 100) == 0
    assert store.get_recommendation("queued") is None
    # the user coming back afterwards is new data
    assert store.put_recommendations([record("new", at=time.time() + 1)], 3600, 100) == 1
