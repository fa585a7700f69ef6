"""Serving from a bundle registry (app/lifecycle/bundle_follow.py, app/lifecycle/promotion.py): the service
loads the announced version and follows promotions and rollbacks; a version it cannot
load leaves the old one serving and is reported in /readyz and /metrics.

Registries of fake bundles: tests/app/registry_fakes.py.
Two processes on a real Redis: tests/reliability/test_registry_replicas.py.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.lifecycle import promotion
from app.service import RecommendationService
from app.settings import Settings
from model.registry import BundleRegistry
from tests.app.conftest import AUTH, StartService, running, service_of, state_of
from tests.app.fakes import FakeEngineFactory, FlakyStore, MemoryStore, wait_until
from tests.app.registry_fakes import add_broken, make_registry


@pytest.fixture
def registry(tmp_path: Path, engine_factory: FakeEngineFactory) -> BundleRegistry:
    return make_registry(tmp_path, engine_factory)


@pytest.fixture
def bad(registry: BundleRegistry, tmp_path: Path, engine_factory: FakeEngineFactory) -> str:
    """v0004: passes the registry's check, the service cannot load it."""
    return add_broken(registry, tmp_path, engine_factory)


@pytest.fixture
def hold_loads(engine_factory: FakeEngineFactory) -> Iterator[Callable[[], threading.Event]]:
    """``hold_loads()``: loads started from then on wait until the event it returns is set
    (set at the end of the test in any case)."""
    gates: list[threading.Event] = []

    def hold() -> threading.Event:
        gates.append(threading.Event())
        engine_factory.gate = gates[-1]
        return gates[-1]

    yield hold
    for gate in gates:
        gate.set()


def follow(svc: RecommendationService) -> None:
    """One poll, then wait for the reload it started."""
    assert svc.follower is not None
    svc.follower.tick()
    svc.loader.wait(30)


@pytest.fixture
def start_registry(
    start: StartService, registry: BundleRegistry
) -> Callable[..., RecommendationService]:
    def make(store: MemoryStore, **overrides: object) -> RecommendationService:
        # polled by hand (follow()) unless a test asks for the background thread
        overrides.setdefault("registry_poll_s", 3600)
        return start(store, registry_dir=registry.root, **overrides)

    return make


def test_serves_the_registry_and_follows_promotion_and_rollback(
    start_registry: Callable[..., RecommendationService], registry: BundleRegistry
) -> None:
    store = MemoryStore()
    svc = start_registry(store)
    assert state_of(svc).model_version == "fake-v1"
    assert svc.model_info().bundle_version == "v0001"
    status = svc.bundle_status()
    assert status is not None
    assert status.model_dump() == {
        "serving": "v0001",
        "wanted": "v0001",
        "loading": None,
        "error": None,
        "canary": None,
    }

    done = promotion.promote(registry, store, "v0003", reason="test")
    assert (done.version, done.previous, done.announced) == ("v0003", "v0001", True)
    follow(svc)
    assert state_of(svc).model_version == "fake-v3"
    assert svc.model_info().bundle_version == "v0003"

    assert promotion.rollback(registry, store).version == "v0001"
    follow(svc)
    assert state_of(svc).model_version == "fake-v1"
    assert svc.degraded() == []


def test_the_announced_version_wins_over_current_at_start(
    start_registry: Callable[..., RecommendationService], registry: BundleRegistry
) -> None:
    store = MemoryStore()
    store.set_bundle_version("v0002", 5.0)  # e.g. this host's current pointer is stale
    svc = start_registry(store)
    assert svc.model_info().bundle_version == "v0002"


def test_background_poll_reloads_without_help(
    start_registry: Callable[..., RecommendationService], registry: BundleRegistry
) -> None:
    store = MemoryStore()
    svc = start_registry(store, registry_poll_s=0.05)
    promotion.promote(registry, store, "v0002", reason="test")
    assert wait_until(lambda: svc.model_info().bundle_version == "v0002", 30)
    assert state_of(svc).model_version == "fake-v2"


def test_unloadable_version_keeps_the_old_one_serving(
    start_registry: Callable[..., RecommendationService],
    registry: BundleRegistry,
    engine_factory: FakeEngineFactory,
    bad: str,
) -> None:
    store = MemoryStore()
    svc = start_registry(store)
    promotion.promote(registry, store, bad, reason="x")
    follow(svc)
    assert state_of(svc).model_version == "fake-v1"
    status = svc.bundle_status()
    assert status is not None and (status.serving, status.wanted) == ("v0001", bad)
    assert status.error is not None and "tampered" in status.error
    assert str(registry.root) not in status.error  # /readyz is unauthenticated
    assert f"bundle {bad} could not be loaded; serving v0001" in svc.degraded()

    # tried once per announcement: polling again does not reload...
    loads = engine_factory.loads
    follow(svc)
    assert engine_factory.loads == loads
    # ...announcing it again does (still broken), and a rollback moves on
    store.set_bundle_version(bad, 99.0)
    follow(svc)
    assert engine_factory.loads == loads + 1
    promotion.rollback(registry, store)
    follow(svc)
    status = svc.bundle_status()
    assert status is not None and status.error is None
    assert svc.model_info().bundle_version == "v0001"


def test_version_missing_on_this_host_is_reported(
    start_registry: Callable[..., RecommendationService],
) -> None:
    store = MemoryStore()
    svc = start_registry(store)
    store.set_bundle_version("v0042", 1.0)
    follow(svc)
    status = svc.bundle_status()
    assert status is not None and status.wanted == "v0042" and status.serving == "v0001"
    assert status.error is not None and "no version v0042" in status.error


def test_readyz_and_metrics_report_the_bundle(
    make_settings: Callable[..., Settings],
    engine_factory: FakeEngineFactory,
    registry: BundleRegistry,
    bad: str,
) -> None:
    store = MemoryStore()
    settings = make_settings(registry_dir=registry.root, registry_poll_s=3600)
    with running(settings, engine_factory, store) as client:
        ready = client.get("/readyz").json()
        assert ready["bundle"] == {
            "serving": "v0001",
            "wanted": "v0001",
            "loading": None,
            "error": None,
            "canary": None,
        }
        assert client.get("/v1/model", headers=AUTH).json()["bundle_version"] == "v0001"
        assert "micrec_bundle_in_sync 1.0" in client.get("/metrics").text

        store.set_bundle_version(bad, 1.0)
        follow(service_of(client))
        r = client.get("/readyz")
        assert r.status_code == 200  # still serving v0001
        body = r.json()
        assert body["status"] == "degraded" and body["bundle"]["wanted"] == bad
        assert body["bundle"]["serving"] == "v0001" and body["bundle"]["error"]
        metrics = client.get("/metrics").text
        assert "micrec_bundle_in_sync 0.0" in metrics
        assert f'micrec_bundle_version_info{{serving="v0001",wanted="{bad}"}} 1.0' in metrics


def test_without_a_registry_nothing_changes(client: TestClient) -> None:
    assert client.get("/readyz").json()["bundle"] is None
    assert client.get("/v1/model", headers=AUTH).json()["bundle_version"] is None


def test_starting_on_an_unloadable_version_falls_back_once(
    start_registry: Callable[..., RecommendationService],
    registry: BundleRegistry,
    engine_factory: FakeEngineFactory,
    bad: str,
) -> None:
    store = MemoryStore()
    promotion.promote(registry, store, "v0002", reason="good")
    promotion.promote(registry, store, bad, reason="broken")  # e.g. while this one was down
    svc = start_registry(store, wait=False)
    assert svc.wait_ready(30) is False  # the wanted version fails, nothing served yet
    follow(svc)  # no old version to keep: the newest other promoted one
    assert svc.model_info().bundle_version == "v0002"
    status = svc.bundle_status()
    assert status is not None and (status.serving, status.wanted) == ("v0002", bad)
    assert status.error is not None and "tampered" in status.error
    loads = engine_factory.loads
    follow(svc)
    assert engine_factory.loads == loads  # once
    promotion.rollback(registry, store)  # the operator's fix: every replica on v0002
    follow(svc)
    status = svc.bundle_status()
    assert status is not None and status.model_dump() == {
        "serving": "v0002",
        "wanted": "v0002",
        "loading": None,
        "error": None,
        "canary": None,
    }


# --- announcements while a load is in flight (issue 22) ---------------------------------
def test_a_rollback_while_the_promoted_version_loads_wins(
    start_registry: Callable[..., RecommendationService],
    registry: BundleRegistry,
    hold_loads: Callable[[], threading.Event],
) -> None:
    """promote v0002, roll back while it loads: v0001 keeps serving for good (the old
    follower took "v0001 wanted and serving" as done, then served v0002 once its load
    ended and never reloaded)."""
    store = MemoryStore()
    svc = start_registry(store)
    follower = svc.follower
    assert follower is not None
    gate = hold_loads()
    promotion.promote(registry, store, "v0002", reason="test")
    follower.tick()  # starts loading v0002: held
    promotion.rollback(registry, store)  # back to v0001 while v0002 loads
    follower.tick()
    gate.set()
    svc.loader.wait(30)
    follow(svc)
    follow(svc)
    assert state_of(svc).model_version == "fake-v1"
    assert svc.loader.status().status == "superseded"  # v0002 was built, never served
    assert svc.degraded() == []
    status = svc.bundle_status()
    assert status is not None and status.model_dump() == {
        "serving": "v0001",
        "wanted": "v0001",
        "loading": None,
        "error": None,
        "canary": None,
    }


def test_readyz_is_degraded_until_the_wanted_version_serves(
    make_settings: Callable[..., Settings],
    engine_factory: FakeEngineFactory,
    registry: BundleRegistry,
    hold_loads: Callable[[], threading.Event],
) -> None:
    store = MemoryStore()
    settings = make_settings(registry_dir=registry.root, registry_poll_s=3600)
    with running(settings, engine_factory, store) as client:
        svc = service_of(client)
        assert svc.follower is not None
        gate = hold_loads()
        try:
            promotion.promote(registry, store, "v0002", reason="test")
            svc.follower.tick()  # starts loading v0002: held
            body = client.get("/readyz").json()
            assert body["status"] == "degraded"
            assert body["degraded"] == [
                "bundle v0002 is loading; serving v0001 until it is complete"
            ]
            assert body["bundle"] == {
                "serving": "v0001",
                "wanted": "v0002",
                "loading": "v0002",
                "error": None,
                "canary": None,
            }
            assert "micrec_bundle_in_sync 0.0" in client.get("/metrics").text

            promotion.rollback(registry, store)
            svc.follower.tick()
            body = client.get("/readyz").json()
            assert body["status"] == "ready", body  # v0001 is the one to serve
            assert body["bundle"]["loading"] == "v0002"
        finally:
            gate.set()
        assert svc.loader.wait(30).status == "superseded"
        metrics = client.get("/metrics").text
        assert "micrec_bundle_in_sync 1.0" in metrics
        assert 'micrec_model_reloads_total{result="superseded"} 1.0' in metrics


def test_a_promotion_during_a_load_is_loaded_after_it(
    start_registry: Callable[..., RecommendationService],
    registry: BundleRegistry,
    hold_loads: Callable[[], threading.Event],
) -> None:
    store = MemoryStore()
    svc = start_registry(store)
    follower = svc.follower
    assert follower is not None
    gate = hold_loads()
    promotion.promote(registry, store, "v0002", reason="test")
    follower.tick()
    promotion.promote(registry, store, "v0003", reason="test")
    follower.tick()  # one load at a time: v0003 waits
    assert svc.degraded() == ["bundle v0003 wanted; serving v0001; loads once v0002's load ends"]
    gate.set()
    assert svc.loader.wait(30).status == "superseded"  # v0002: no longer wanted
    assert state_of(svc).model_version == "fake-v1"
    follow(svc)
    assert state_of(svc).model_version == "fake-v3"
    assert svc.degraded() == []


def test_promoted_again_during_its_own_load_it_is_served(
    start_registry: Callable[..., RecommendationService],
    registry: BundleRegistry,
    hold_loads: Callable[[], threading.Event],
    engine_factory: FakeEngineFactory,
) -> None:
    """promote v0002, roll back, promote v0002 again, all during one load: that load is
    the wanted one again when it ends, and is served (not loaded twice)."""
    store = MemoryStore()
    svc = start_registry(store)
    follower = svc.follower
    assert follower is not None
    loads = engine_factory.loads
    gate = hold_loads()
    promotion.promote(registry, store, "v0002", reason="test")
    follower.tick()
    promotion.rollback(registry, store)
    follower.tick()
    promotion.promote(registry, store, "v0002", reason="test")
    follower.tick()
    gate.set()
    assert svc.loader.wait(30).status == "succeeded"
    follow(svc)
    assert state_of(svc).model_version == "fake-v2"
    assert engine_factory.loads == loads + 1


def test_another_version_serving_is_replaced_by_the_wanted_one(
    start_registry: Callable[..., RecommendationService], registry: BundleRegistry
) -> None:
    """Whatever made another version serve (an admin reload, a load that became stale
    after its last check), the next poll loads the wanted one again."""
    store = MemoryStore()
    svc = start_registry(store)
    svc.loader.start(registry.path("v0002"))
    svc.loader.wait(30)
    assert state_of(svc).model_version == "fake-v2"
    assert svc.degraded() == ["bundle v0001 wanted; serving v0002: reloading"]
    follow(svc)
    assert state_of(svc).model_version == "fake-v1"
    assert svc.degraded() == []


def test_while_the_store_is_down_the_last_version_read_is_served(
    start_registry: Callable[..., RecommendationService], registry: BundleRegistry
) -> None:
    flaky = FlakyStore(MemoryStore())
    svc = start_registry(flaky)
    promotion.promote(registry, flaky, "v0003", reason="test")
    follow(svc)
    assert state_of(svc).model_version == "fake-v3"
    flaky.down = True
    svc.loader.start(registry.path("v0002"))  # e.g. a load that became stale
    svc.loader.wait(30)
    follow(svc)  # the store cannot be read: v0003 is still the version to serve
    assert state_of(svc).model_version == "fake-v3"
    status = svc.bundle_status()
    assert status is not None and (status.serving, status.wanted) == ("v0003", "v0003")
