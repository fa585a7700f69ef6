"""Popularity (app/lifecycle/popularity.py): bundle training popularity + API counts."""

from __future__ import annotations

from app.api.schemas import InteractionIn, RecommendRequest
from tests.app.conftest import StartService
from tests.app.fakes import MemoryStore


def test_popularity_merges_bundle_and_api_counts(
    start: StartService, memory_store: MemoryStore
) -> None:
    svc = start(memory_store)
    # arts-59 has the lowest bundle popularity (1); 100 API interactions, posted by two
    # keys (each under popularity_key_cap = 50), make it first.
    for source in ("key-a", "key-b"):
        rows = [InteractionIn(user_id=f"{source}-u{k}", item_id="arts-59") for k in range(50)]
        svc.interactions.add(rows, source=source)
    rec = svc.recommender.recommend(RecommendRequest(domain="arts", n=2))
    assert rec.user_embedding == "fallback"
    assert [i.item_id for i in rec.items] == ["arts-59", "arts-0"]
    assert rec.items[0].score == 101 and rec.items[0].source == "popular"


def test_one_key_counts_at_most_popularity_key_cap_users_per_item(
    start: StartService, memory_store: MemoryStore
) -> None:
    """The attack of issue 22: one key posting 2 x 1,000 rows of made-up users made any
    item the most popular. Now it adds at most popularity_key_cap (50) to the item, while
    legitimate traffic from several keys still moves it."""
    svc = start(memory_store)
    assert svc.settings.popularity_key_cap == 50
    for batch in range(2):
        rows = [InteractionIn(user_id=f"fake-{batch}-{k}", item_id="arts-59") for k in range(1000)]
        assert svc.interactions.add(rows, source="attacker").accepted == 1000
    assert svc.popularity.count("arts", "arts-59") == 50
    assert [
        i.item_id for i in svc.recommender.recommend(RecommendRequest(domain="arts", n=1)).items
    ] == ["arts-0"]
    # the rows are stored all the same (histories)
    assert memory_store.get_history("fake-1-999") == {"arts": ["arts-59"]}
    for source in ("app-1", "app-2", "app-3"):
        rows = [InteractionIn(user_id=f"{source}-{k}", item_id="arts-58") for k in range(10)]
        svc.interactions.add(rows, source=source)
    assert svc.popularity.count("arts", "arts-58") == 30
    # erasing a counted user frees a place for the key that counted it
    svc.erasure.erase("fake-0-0")
    svc.interactions.add([InteractionIn(user_id="late", item_id="arts-59")], source="attacker")
    assert svc.popularity.count("arts", "arts-59") == 50


def test_a_refresh_during_a_local_write_does_not_count_it_twice() -> None:
    """A refresh that reads the store while a write is half done must not install those
    counts and then add the write's increments on top (it once showed 383 for 200)."""
    from unittest.mock import Mock

    from app.lifecycle.popularity import PopularityBook

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
