"""Item registration, replacement and deletion (app/catalogue/items.py) through the service."""

from __future__ import annotations

import pytest

from app.api.errors import Conflict, NotFound, Unavailable
from app.api.schemas import InteractionIn, RecommendRequest
from app.store.base import StoredItem
from tests.app.conftest import StartService, state_of
from tests.app.fakes import FlakyStore, MemoryStore


def test_registered_item_is_served_at_once(start: StartService, memory_store: MemoryStore) -> None:
    svc = start(memory_store)
    item, created = svc.items.register(item_id="mug", domain="arts", title="red mug")
    assert created and item.origin == "api" and item.modalities == ["text"]
    rec = svc.recommender.recommend(
        RecommendRequest(domain="arts", history=["mug"], exclude_seen=False, n=svc.settings.max_n)
    )
    assert rec.user_embedding == "inductive"
    assert "mug" in {i.item_id for i in rec.items if i.source == "model"}
    assert memory_store.get_item("mug") is not None  # durable


def test_register_conflicts_and_replace(start: StartService, memory_store: MemoryStore) -> None:
    svc = start(memory_store)
    svc.items.register(item_id="mug", domain="arts", title="red mug")
    with pytest.raises(Conflict, match="already exists"):
        svc.items.register(item_id="mug", domain="arts", title="other")
    with pytest.raises(Conflict, match="bundle"):
        svc.items.register(item_id="arts-1", domain="arts", title="x")
    item, created = svc.items.register(
        item_id="mug", replace=True, domain="office", title="blue mug"
    )
    assert not created and item.domain == "office"
    state = state_of(svc)
    assert "mug" in state.indexes["office"] and "mug" not in state.indexes["arts"]
    svc.items.delete("mug")
    with pytest.raises(NotFound):
        svc.items.get("mug")
    with pytest.raises(NotFound):
        svc.items.delete("mug")


def test_register_in_store_by_other_replica_conflicts(
    start: StartService, memory_store: MemoryStore
) -> None:
    svc = start(memory_store)
    memory_store.put_item(StoredItem(item_id="x1", domain="arts", title="t"))
    with pytest.raises(Conflict):
        svc.items.register(item_id="x1", domain="arts", title="t")


def test_store_outage_writes_503_reads_keep_working(
    start: StartService, memory_store: MemoryStore
) -> None:
    flaky = FlakyStore(memory_store)
    svc = start(flaky)
    svc.interactions.add([InteractionIn(user_id="u1", item_id="arts-3")])
    flaky.down = True
    with pytest.raises(Unavailable) as err:
        svc.items.register(item_id="mug", domain="arts", title="red mug")
    assert err.value.headers["Retry-After"] == "5"
    with pytest.raises(Unavailable):
        svc.interactions.add([InteractionIn(user_id="u1", item_id="arts-4")])
    assert "mug" not in state_of(svc).registered  # nothing half-applied
    rec = svc.recommender.recommend(
        RecommendRequest(domain="arts", user_id="u1", history=["arts-3"], n=3)
    )
    assert rec.history.stored == "unavailable"
    assert rec.user_embedding == "inductive" and len(rec.items) == 3
    assert any("unavailable" in w for w in rec.warnings)
