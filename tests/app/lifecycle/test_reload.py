"""Loading and reloading the model (app/lifecycle/reload.py) through the service."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from app.api.errors import Conflict, NotReady
from app.api.schemas import RecommendRequest
from tests.app.conftest import StartService, state_of
from tests.app.fakes import FakeEngineFactory, MemoryStore


def test_not_ready_until_loaded(
    start: StartService, engine_factory: FakeEngineFactory, memory_store: MemoryStore
) -> None:
    engine_factory.gate = threading.Event()
    svc = start(memory_store, wait=False)
    with pytest.raises(NotReady, match="loading"):
        svc.recommender.recommend(RecommendRequest(domain="arts"))
    engine_factory.gate.set()
    assert svc.wait_ready(30)
    assert svc.recommender.recommend(RecommendRequest(domain="arts", n=3)).items


def test_failed_initial_load_is_reported(start: StartService, tmp_path: Path) -> None:
    svc = start(MemoryStore(), wait=False, bundle_path=tmp_path / "missing")
    assert svc.wait_ready(30) is False
    with pytest.raises(NotReady, match="model load failed"):
        svc.recommender.recommend(RecommendRequest(domain="arts"))
    assert svc.loader.status().status == "failed"


def test_reload_keeps_items_registered_while_it_ran(
    start: StartService,
    memory_store: MemoryStore,
    engine_factory: FakeEngineFactory,
    tmp_path: Path,
) -> None:
    svc = start(memory_store)
    svc.items.register(item_id="before", domain="arts", title="a")
    v2 = engine_factory.make_bundle(tmp_path / "v2", version="fake-v2")
    engine_factory.gate = threading.Event()
    svc.loader.start(v2)
    with pytest.raises(Conflict, match="already running"):
        svc.loader.start(v2)
    # Written to the old state while the new one is being built...
    svc.items.register(item_id="during", domain="office", title="b")
    svc.items.delete("before")
    engine_factory.gate.set()
    assert svc.loader.wait(30).status == "succeeded"
    state = state_of(svc)
    assert state.model_version == "fake-v2"
    # ...and caught up into the new state before the swap.
    assert "during" in state.indexes["office"] and "before" not in state.registered


def test_failed_reload_keeps_old_model(
    start: StartService, memory_store: MemoryStore, tmp_path: Path
) -> None:
    svc = start(memory_store)
    status = svc.loader.start(tmp_path / "missing")
    assert status.status == "loading"
    final = svc.loader.wait(30)
    assert final.status == "failed" and "not a bundle" in (final.error or "")
    assert final.model_version == "fake-v1"
    assert (
        svc.recommender.recommend(RecommendRequest(domain="arts", n=2)).model_version == "fake-v1"
    )
    assert any("last reload failed" in d for d in svc.degraded())
