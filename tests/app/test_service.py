"""RecommendationService without HTTP: loading, replay, replicas, reload, store outages."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from app.errors import Conflict, InvalidInput, NotFound, NotReady, Unavailable
from app.schemas import InteractionIn
from app.service import RecommendationService
from app.settings import Settings
from app.state import ModelState
from app.store.base import StoredItem
from tests.app.fakes import FakeEngineFactory, FlakyStore, MemoryStore

StartService = Callable[..., RecommendationService]


@pytest.fixture
def start(
    make_settings: Callable[..., Settings], engine_factory: FakeEngineFactory
) -> Iterator[StartService]:
    """Start services (background sync off: tests call ``sync_once`` themselves)."""
    started: list[RecommendationService] = []

    def make(store: object, *, wait: bool = True, **overrides: object) -> RecommendationService:
        overrides.setdefault("replica_sync_interval_s", 0)
        overrides.setdefault("popularity_refresh_s", 0)
        svc = RecommendationService(make_settings(**overrides), store, engine_factory)  # type: ignore[arg-type]
        svc.start()
        started.append(svc)
        if wait:
            assert svc.wait_ready(30)
        return svc

    yield make
    for svc in started:
        svc.stop()


def state_of(svc: RecommendationService) -> ModelState:
    state = svc.state
    assert state is not None
    return state


def test_not_ready_until_loaded(
    start: StartService, engine_factory: FakeEngineFactory, memory_store: MemoryStore
) -> None:
    engine_factory.gate = threading.Event()
    svc = start(memory_store, wait=False)
    with pytest.raises(NotReady, match="loading"):
        svc.recommend(domain="arts")
    engine_factory.gate.set()
    assert svc.wait_ready(30)
    assert svc.recommend(domain="arts", n=3).items


def test_failed_initial_load_is_reported(start: StartService, tmp_path: Path) -> None:
    svc = start(MemoryStore(), wait=False, bundle_path=tmp_path / "missing")
    assert svc.wait_ready(30) is False
    with pytest.raises(NotReady, match="model load failed"):
        svc.recommend(domain="arts")
    assert svc.reload_status().status == "failed"


def test_registered_item_is_served_at_once(start: StartService, memory_store: MemoryStore) -> None:
    svc = start(memory_store)
    item, created = svc.register_item(item_id="mug", domain="arts", title="red mug")
    assert created and item.origin == "api" and item.modalities == ["text"]
    rec = svc.recommend(domain="arts", history=["mug"], exclude_seen=False, n=svc.settings.max_n)
    assert rec.user_embedding == "inductive"
    assert "mug" in {i.item_id for i in rec.items if i.source == "model"}
    assert memory_store.get_item("mug") is not None  # durable


def test_register_conflicts_and_replace(start: StartService, memory_store: MemoryStore) -> None:
    svc = start(memory_store)
    svc.register_item(item_id="mug", domain="arts", title="red mug")
    with pytest.raises(Conflict, match="already exists"):
        svc.register_item(item_id="mug", domain="arts", title="other")
    with pytest.raises(Conflict, match="bundle"):
        svc.register_item(item_id="arts-1", domain="arts", title="x")
    item, created = svc.update_item("mug", domain="office", title="blue mug")
    assert not created and item.domain == "office"
    state = state_of(svc)
    assert "mug" in state.indexes["office"] and "mug" not in state.indexes["arts"]
    svc.delete_item("mug")
    with pytest.raises(NotFound):
        svc.get_item("mug")
    with pytest.raises(NotFound):
        svc.delete_item("mug")


def test_register_in_store_by_other_replica_conflicts(
    start: StartService, memory_store: MemoryStore
) -> None:
    svc = start(memory_store)
    memory_store.put_item(StoredItem(item_id="x1", domain="arts", title="t"))
    with pytest.raises(Conflict):
        svc.register_item(item_id="x1", domain="arts", title="t")


def test_start_up_replays_stored_items(start: StartService, memory_store: MemoryStore) -> None:
    vec = np.ones(8, np.float32) / np.sqrt(8)
    memory_store.put_item(
        StoredItem(
            item_id="old", domain="office", title="kept", content={"text": vec}, created_at=1.0
        )
    )
    svc = start(memory_store)
    assert svc.get_item("old").title == "kept"
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
        svc.get_item("old")
    flaky.down = False
    svc.sync_once()
    assert svc.degraded() == []
    assert svc.get_item("old").title == "kept"


def test_store_outage_writes_503_reads_keep_working(
    start: StartService, memory_store: MemoryStore
) -> None:
    flaky = FlakyStore(memory_store)
    svc = start(flaky)
    svc.add_interactions([InteractionIn(user_id="u1", item_id="arts-3")])
    flaky.down = True
    with pytest.raises(Unavailable) as err:
        svc.register_item(item_id="mug", domain="arts", title="red mug")
    assert err.value.headers["Retry-After"] == "5"
    with pytest.raises(Unavailable):
        svc.add_interactions([InteractionIn(user_id="u1", item_id="arts-4")])
    assert "mug" not in state_of(svc).registered  # nothing half-applied
    rec = svc.recommend(domain="arts", user_id="u1", history=["arts-3"], n=3)
    assert rec.history.stored == "unavailable"
    assert rec.user_embedding == "inductive" and len(rec.items) == 3
    assert any("unavailable" in w for w in rec.warnings)


def test_replicas_follow_each_other(start: StartService, memory_store: MemoryStore) -> None:
    a = start(memory_store)
    b = start(memory_store)
    a.register_item(item_id="mug", domain="arts", title="red mug")
    b.sync_once()
    assert b.get_item("mug").title == "red mug"
    assert "mug" in state_of(b).indexes["arts"]
    a.update_item("mug", domain="arts", title="blue mug")
    b.sync_once()
    assert b.get_item("mug").title == "blue mug"
    a.delete_item("mug")
    b.sync_once()
    with pytest.raises(NotFound):
        b.get_item("mug")
    assert "mug" not in state_of(b).indexes["arts"]
    # interactions on an item B registered but A has not synced yet are accepted
    b.register_item(item_id="pen", domain="office", title="pen")
    res = a.add_interactions([InteractionIn(user_id="u", item_id="pen", domain="office")])
    assert res.accepted == 1


def test_a_replica_catches_up_when_a_request_names_an_item_it_does_not_know(
    start: StartService, memory_store: MemoryStore
) -> None:
    """Register on A, then use the item on B before B's next feed tick (an hour away): B
    reads the feed for the request instead of ignoring the id as unknown."""
    a = start(memory_store, replica_sync_interval_s=3600)
    b = start(memory_store, replica_sync_interval_s=3600)
    a.register_item(item_id="lamp", domain="office", title="desk lamp")
    assert "lamp" not in state_of(b).indexes["office"]
    out = b.recommend(domain="office", history=["lamp"], exclude_seen=False, n=500)
    assert out.user_embedding == "inductive" and out.history.unknown_ids == []
    assert "lamp" in {i.item_id for i in out.items}
    a.register_item(item_id="pen", domain="office", title="pen")
    assert b.similar("pen").item_id == "pen"
    # Ids nobody registered stay unknown (and cost one feed read, no error).
    out = b.recommend(domain="office", history=["never-registered"])
    assert out.history.unknown_ids == ["never-registered"]
    # With following off there is no feed to read: the id stays unknown until a reload.
    c = start(memory_store, replica_sync_interval_s=0)
    a.register_item(item_id="cup", domain="office", title="cup")
    assert c.recommend(domain="office", history=["cup"]).history.unknown_ids == ["cup"]


def test_reload_keeps_items_registered_while_it_ran(
    start: StartService,
    memory_store: MemoryStore,
    engine_factory: FakeEngineFactory,
    tmp_path: Path,
) -> None:
    svc = start(memory_store)
    svc.register_item(item_id="before", domain="arts", title="a")
    v2 = engine_factory.make_bundle(tmp_path / "v2", version="fake-v2")
    engine_factory.gate = threading.Event()
    svc.start_reload(v2)
    with pytest.raises(Conflict, match="already running"):
        svc.start_reload(v2)
    # Written to the old state while the new one is being built...
    svc.register_item(item_id="during", domain="office", title="b")
    svc.delete_item("before")
    engine_factory.gate.set()
    assert svc.wait_reload(30).status == "succeeded"
    state = state_of(svc)
    assert state.model_version == "fake-v2"
    # ...and caught up into the new state before the swap.
    assert "during" in state.indexes["office"] and "before" not in state.registered


def test_failed_reload_keeps_old_model(
    start: StartService, memory_store: MemoryStore, tmp_path: Path
) -> None:
    svc = start(memory_store)
    status = svc.start_reload(tmp_path / "missing")
    assert status.status == "loading"
    final = svc.wait_reload(30)
    assert final.status == "failed" and "not a bundle" in (final.error or "")
    assert final.model_version == "fake-v1"
    assert svc.recommend(domain="arts", n=2).model_version == "fake-v1"
    assert any("last reload failed" in d for d in svc.degraded())


def test_limits_and_validation(start: StartService, memory_store: MemoryStore) -> None:
    svc = start(memory_store, max_n=5, default_n=5, max_history=3, max_batch=2)
    with pytest.raises(InvalidInput, match="max_n=5"):
        svc.recommend(domain="arts", n=6)
    with pytest.raises(InvalidInput, match="valid domains: arts, office"):
        svc.recommend(domain="toys")
    from app.errors import PayloadTooLarge

    with pytest.raises(PayloadTooLarge, match="max_history=3"):
        svc.recommend(domain="arts", history=["a", "b", "c", "d"], n=2)
    with pytest.raises(PayloadTooLarge, match="max_batch=2"):
        svc.add_interactions([InteractionIn(user_id="u", item_id="arts-1")] * 3)


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
