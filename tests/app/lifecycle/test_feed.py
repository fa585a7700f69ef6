"""The item change feed (app/lifecycle/feed.py): replay at load, replica sync, catch-up."""

from __future__ import annotations

import numpy as np
import pytest

from app.api.errors import NotFound
from app.api.schemas import InteractionIn, RecommendRequest
from app.store.base import StoredItem
from tests.app.conftest import StartService, state_of
from tests.app.fakes import FlakyStore, MemoryStore


def test_start_up_replays_stored_items(start: StartService, memory_store: MemoryStore) -> None:
    vec = np.ones(8, np.float32) / np.sqrt(8)
    memory_store.put_item(
        StoredItem(
            item_id="old", domain="office", title="kept", content={"text": vec}, created_at=1.0
        )
    )
    svc = start(memory_store)
    assert svc.items.get("old").title == "kept"
    assert "old" in state_of(svc).indexes["office"]


def test_store_down_at_start_is_degraded_then_replayed(
    start: StartService, memory_store: MemoryStore
) -> None:
    memory_store.put_item(StoredItem(item_id="old", domain="office", title="kept"))
    flaky = FlakyStore(memory_store)
    flaky.down = True
    svc = start(flaky)
    assert any("not replayed" in d for d in svc.degraded())
    with pytest.raises(NotFound):
        svc.items.get("old")
    flaky.down = False
    svc.sync.once()
    assert svc.degraded() == []
    assert svc.items.get("old").title == "kept"


def test_replicas_follow_each_other(start: StartService, memory_store: MemoryStore) -> None:
    a = start(memory_store)
    b = start(memory_store)
    a.items.register(item_id="mug", domain="arts", title="red mug")
    b.sync.once()
    assert b.items.get("mug").title == "red mug"
    assert "mug" in state_of(b).indexes["arts"]
    a.items.register(item_id="mug", replace=True, domain="arts", title="blue mug")
    b.sync.once()
    assert b.items.get("mug").title == "blue mug"
    a.items.delete("mug")
    b.sync.once()
    with pytest.raises(NotFound):
        b.items.get("mug")
    assert "mug" not in state_of(b).indexes["arts"]
    # interactions on an item B registered but A has not synced yet are accepted
    b.items.register(item_id="pen", domain="office", title="pen")
    res = a.interactions.add([InteractionIn(user_id="u", item_id="pen", domain="office")])
    assert res.accepted == 1


def test_a_replica_catches_up_when_a_request_names_an_item_it_does_not_know(
    start: StartService, memory_store: MemoryStore
) -> None:
    """Register on A, then use the item on B before B's next feed tick (an hour away): B
    reads the feed for the request instead of ignoring the id as unknown."""
    a = start(memory_store, replica_sync_interval_s=3600)
    b = start(memory_store, replica_sync_interval_s=3600)
    a.items.register(item_id="lamp", domain="office", title="desk lamp")
    assert "lamp" not in state_of(b).indexes["office"]
    out = b.recommender.recommend(
        RecommendRequest(domain="office", history=["lamp"], exclude_seen=False, n=500)
    )
    assert out.user_embedding == "inductive" and out.history.unknown_ids == []
    assert "lamp" in {i.item_id for i in out.items}
    a.items.register(item_id="pen", domain="office", title="pen")
    assert b.recommender.similar("pen").item_id == "pen"
    # Ids nobody registered stay unknown (and cost one feed read, no error).
    out = b.recommender.recommend(RecommendRequest(domain="office", history=["never-registered"]))
    assert out.history.unknown_ids == ["never-registered"]
    # With following off there is no feed to read: the id stays unknown until a reload.
    c = start(memory_store, replica_sync_interval_s=0)
    a.items.register(item_id="cup", domain="office", title="cup")
    assert c.recommender.recommend(
        RecommendRequest(domain="office", history=["cup"])
    ).history.unknown_ids == ["cup"]


def test_a_change_seen_again_is_not_applied_twice(
    start: StartService, memory_store: MemoryStore
) -> None:
    """The sync loop reads this process's own registration back from the feed. Applying it
    again would briefly take the item out of the engine (a concurrent recommend folded the
    history in without it: a CI failure) and invalidate caches for nothing."""
    svc = start(memory_store)
    svc.items.register(item_id="mug", domain="arts", title="red mug")
    state = state_of(svc)
    version = state.registered.version
    calls: list[str] = []

    def add_item(item_id: str, *args: object, **kwargs: object) -> np.ndarray:
        calls.append(item_id)
        raise AssertionError("re-applied")

    state.engine.add_item = add_item  # type: ignore[method-assign]
    svc.sync.once()
    assert calls == [] and state.registered.version == version
    assert "mug" in state.indexes["arts"]
