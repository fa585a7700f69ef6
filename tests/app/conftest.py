"""Fixtures for the service tests.

The model comes from the ``engine_factory`` fixture (today the FakeEngine test double in
``tests/app/fakes.py``). To run the suite on a real tiny bundle, change that one fixture
to return an object with ``__call__(path) -> InferenceEngine`` (``app.lifecycle.engine.load_engine``)
and ``make_bundle(directory, version=..., users=...) -> Path``. Checks that a new item is
served use :func:`served_by_model` (membership in the whole ranked domain, not rank 1),
so they hold for any engine; tests that name catalogue items ("arts-1", the "arts" and
"office" domains, popularity order, "group<k>" categories) rely on the fake's
deterministic catalogue, and a real tiny bundle would need the same layout (or those
tests reading ids from ``catalogue_ids``).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.http.main import create_app
from app.lifecycle.state import ModelState
from app.service import RecommendationService
from app.settings import Settings
from app.store.base import Store
from tests.app.fakes import FakeEngineFactory, MemoryStore

API_KEY = "test-key-0123456789"
AUTH = {"X-API-Key": API_KEY}
ADMIN_KEY = "test-admin-key-0123456789"
ADMIN = {"X-API-Key": ADMIN_KEY}


@pytest.fixture
def engine_factory() -> FakeEngineFactory:
    """THE switch between the fake engine and a real tiny bundle (see module docstring)."""
    return FakeEngineFactory()


@pytest.fixture
def bundle(tmp_path: Path, engine_factory: FakeEngineFactory) -> Path:
    return engine_factory.make_bundle(tmp_path / "bundle-v1", version="fake-v1")


def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'state.db'}"


def have_real_stores() -> bool:
    return importlib.util.find_spec("app.store.factory") is not None


@pytest.fixture
def make_settings(tmp_path: Path, bundle: Path) -> Callable[..., Settings]:
    """Settings for tests: fast sync, auth on, the tmp sqlite store."""

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "bundle_path": bundle,
            "store_url": sqlite_url(tmp_path),
            "api_keys": [API_KEY],
            "admin_keys": [ADMIN_KEY],
            "replica_sync_interval_s": 0.05,
            "popularity_refresh_s": 0.05,
            # large enough to list a whole (tiny) domain: "is the item served at all"
            "max_n": 2000,
            "torch_threads": 1,
            "faiss_threads": 1,
        }
        values.update(overrides)
        return Settings(**values)

    return make


@contextmanager
def running(
    settings: Settings,
    engine_factory: Callable[[Path], Any],
    store: Store | None = None,
    *,
    wait: bool = True,
) -> Iterator[TestClient]:
    """A started app (lifespan run) behind a TestClient; waits for the model by default.

    ``store=None`` uses ``settings.store_url`` (the real store) when the store package is
    available, else an in-memory store.
    """
    if store is None and not have_real_stores():
        store = MemoryStore()
    app = create_app(settings, engine_factory=engine_factory, store=store)
    with TestClient(app) as client:
        if wait:
            assert service_of(client).wait_ready(30), service_of(client).loader.status()
        yield client


def service_of(client: TestClient) -> RecommendationService:
    service: RecommendationService = client.app.state.service  # type: ignore[attr-defined]
    return service


StartService = Callable[..., RecommendationService]


@pytest.fixture
def start(
    make_settings: Callable[..., Settings], engine_factory: FakeEngineFactory
) -> Iterator[StartService]:
    """Start services without HTTP (background sync off: tests call ``sync.once``)."""
    started: list[RecommendationService] = []

    def make(store: Store, *, wait: bool = True, **overrides: object) -> RecommendationService:
        overrides.setdefault("replica_sync_interval_s", 0)
        overrides.setdefault("popularity_refresh_s", 0)
        svc = RecommendationService(make_settings(**overrides), store, engine_factory)
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


@pytest.fixture
def memory_store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def client(
    make_settings: Callable[..., Settings],
    engine_factory: FakeEngineFactory,
    memory_store: MemoryStore,
) -> Iterator[TestClient]:
    """The app on an in-memory store (store-specific behaviour: tests/app/test_stores.py)."""
    with running(make_settings(), engine_factory, memory_store) as c:
        yield c


def served_by_model(client: Any, item_id: str, domain: str, **body: Any) -> bool:
    """True when ``item_id`` is among the model-ranked items of ``domain`` for a user whose
    history is that item (any engine: asks for the whole domain, not for rank 1)."""
    payload = {"history": [item_id], "domain": domain, "exclude_seen": False, "n": 2000}
    r = client.post("/v1/recommend", json={**payload, **body})
    assert r.status_code == 200, r.text
    return any(i["item_id"] == item_id and i["source"] == "model" for i in r.json()["items"])


def catalogue_ids(client: TestClient, domain: str) -> list[str]:
    state = service_of(client).state
    assert state is not None
    return list(state.engine.catalogue(domain).item_ids)


def domains_of(client: TestClient) -> list[str]:
    return list(client.get("/v1/model", headers=AUTH).json()["domains"])
