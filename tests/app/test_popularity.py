"""Popularity (app/popularity.py): bundle training popularity + API counts."""

from __future__ import annotations

from app.schemas import InteractionIn, RecommendRequest
from tests.app.conftest import StartService
from tests.app.fakes import MemoryStore


def test_popularity_merges_bundle_and_api_counts(
    start: StartService, memory_store: MemoryStore
) -> None:
    svc = start(memory_store)
    # arts-59 has the lowest bundle popularity (1); 100 API interactions make it first.
    rows = [InteractionIn(user_id=f"u{k}", item_id="arts-59") for k in range(100)]
    svc.interactions.add(rows)
    rec = svc.recommender.recommend(RecommendRequest(domain="arts", n=2))
    assert rec.user_embedding == "fallback"
    assert [i.item_id for i in rec.items] == ["arts-59", "arts-0"]
    assert rec.items[0].score == 101 and rec.items[0].source == "popular"


def test_a_refresh_during_a_local_write_does_not_count_it_twice() -> None:
    """A refresh that reads the store while a write is half done must not install those
    counts and then add the write's increments on top (it once showed 383 for 200)."""
    from unittest.mock import Mock

    from app.popularity import PopularityBook

    class HalfWritten:
        """The store's counts while a 200-row write is 183 rows in."""

        def popularity(self, domain: str) -> dict[str, int]:
            return {"hot": 183}

    book = PopularityBook(refresh_every_s=0.001)
    health = Mock()  # store health is not exercised: these reads never fail
    with book.local_write():
        book.refresh(HalfWritten(), ["arts"], health, force=True)  # type: ignore[arg-type]
        book.add({("arts", "hot"): 200})
    assert book.count("arts", "hot") == 200

    class Done:
        def popularity(self, domain: str) -> dict[str, int]:
            return {"hot": 200}

    book.refresh(Done(), ["arts"], health, force=True)  # type: ignore[arg-type]
    assert book.count("arts", "hot") == 200
