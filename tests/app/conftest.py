"""Fixtures for the service tests.

The model comes from the ``engine_factory`` fixture (today the FakeEngine test double in
``tests/app/fakes.py``). To run the suite on a real tiny bundle, change that one fixture
to return an object with ``__call__(path) -> InferenceEngine`` (``app.service.load_engine``)
and ``make_bundle(directory, version=..., users=...) -> Path``; tests read item ids and
domains from the loaded engine, never hard-code them.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.service import RecommendationService
from app.settings import Settings
from app.store.base import Store
from tests.app.fakes import FakeEngineFactory, MemoryStore

API_KEY = "test-key-0123456789"
AUTH = {"X-API-Key": API_KEY}


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
            "replica_sync_interval_s": 0.05,
            "popularity_refresh_s": 0.05,
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
            assert service_of(client).wait_ready(30), service_of(client).reload_status()
        yield client


def service_of(client: TestClient) -> RecommendationService:
    service: RecommendationService = client.app.state.service  # type: ignore[attr-defined]
    return service


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


def catalogue_ids(client: TestClient, domain: str) -> list[str]:
    state = service_of(client).state
    assert state is not None
    return list(state.engine.catalogue(domain).item_ids)


def domains_of(client: TestClient) -> list[str]:
    return list(client.get("/v1/model", headers=AUTH).json()["domains"])
