"""Popularity (app/popularity.py): bundle training popularity + API counts."""

from __future__ import annotations

from app.schemas import InteractionIn
from tests.app.conftest import StartService
from tests.app.fakes import MemoryStore


def test_popularity_merges_bundle_and_api_counts(
    start: StartService, memory_store: MemoryStore
) -> None:
    svc = start(memory_store)
    # arts-59 has the lowest bundle popularity (1); 100 API interactions make it first.
    rows = [InteractionIn(user_id=f"u{k}", item_id="arts-59") for k in range(100)]
    svc.add_interactions(rows)
    rec = svc.recommend(domain="arts", n=2)
    assert rec.user_embedding == "fallback"
    assert [i.item_id for i in rec.items] == ["arts-59", "arts-0"]
    assert rec.items[0].score == 101 and rec.items[0].source == "popular"
