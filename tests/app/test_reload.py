"""Loading and reloading the model (app/reload.py) through the service."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from app.errors import Conflict, NotReady
from tests.app.conftest import StartService, state_of
from tests.app.fakes import FakeEngineFactory, MemoryStore


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
