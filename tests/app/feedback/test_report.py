"""The retrain report's online section: metrics of the version named, the empty case and
a store that cannot be read (the retrain goes on)."""

from __future__ import annotations

import time

from app.feedback.report import online_markdown, online_report
from app.store.online import RecommendationRecord
from tests.app.fakes import FlakyStore, MemoryStore


def test_the_section_holds_the_versions_metrics_and_says_when_there_are_none() -> None:
    store = MemoryStore()
    items = (("a", "model"), ("b", "model"))
    for version in ("v1", "v2"):
        store.put_recommendations(
            [
                RecommendationRecord(
                    f"r-{version}", "u", None, "food", version, time.time(), items, 4
                )
            ],
            60,
            10,
        )
    store.add_feedback("r-v1", [("b", "impression"), ("b", "purchase")], {"purchase"})
    report = online_report(store, "v1", {"purchase"})
    food = report["domains"]["food"]
    assert (food["recommendations"], food["clicks"], food["mrr"]) == (1, 1, 0.5)
    assert food["positives"] == {"purchase": 1} and food["coverage"] == 0.5
    md = online_markdown(report)
    assert "## Online metrics of the current version (v1)" in md
    assert "| food | 1 | 1 | 100.0 % [" in md
    assert "No recommendations" in online_markdown(online_report(store, "v9", {"click"}))


def test_an_unreadable_store_leaves_the_section_out_with_the_reason() -> None:
    store = FlakyStore(MemoryStore())
    store.down = True
    report = online_report(store, "v1", {"click"})
    assert report["error"].startswith("store unavailable")
    assert "Not read: store unavailable" in online_markdown(report)
