"""``/v1/admin/bundles``: list, promote, rollback through the admin API (app/lifecycle/promotion.py
``RegistryAdmin``), with registry errors as 404/409/422 and a down store as 503."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.settings import Settings
from model.registry import BundleRegistry
from tests.app.conftest import ADMIN, AUTH, running, service_of
from tests.app.fakes import FakeEngineFactory, FlakyStore, MemoryStore
from tests.app.registry_fakes import make_registry

PROMOTE = "/v1/admin/bundles/promote"
ROLLBACK = "/v1/admin/bundles/rollback"


@pytest.fixture
def registry(tmp_path: Path, engine_factory: FakeEngineFactory) -> BundleRegistry:
    return make_registry(tmp_path, engine_factory)


@pytest.fixture
def store() -> FlakyStore:
    return FlakyStore(MemoryStore())


@pytest.fixture
def admin_client(
    make_settings: Callable[..., Settings],
    engine_factory: FakeEngineFactory,
    registry: BundleRegistry,
    store: FlakyStore,
) -> Iterator[TestClient]:
    settings = make_settings(registry_dir=registry.root, registry_poll_s=3600)
    with running(settings, engine_factory, store) as client:
        yield client


def served(client: TestClient) -> str:
    service_of(client).loader.wait(30)
    version: str = client.get("/v1/model").json()["bundle_version"]
    return version


def test_list(admin_client: TestClient) -> None:
    r = admin_client.get("/v1/admin/bundles", headers=ADMIN)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["current"] == "v0001"
    assert body["bundle"] == {
        "serving": "v0001",
        "wanted": "v0001",
        "loading": None,
        "error": None,
        "canary": None,
    }
    assert [(v["version"], v["status"]) for v in body["versions"]] == [
        ("v0001", "promoted"),
        ("v0002", "candidate"),
        ("v0003", "candidate"),
    ]
    assert body["history"][-1]["event"] == "promote"


def test_promote_and_rollback_reload_this_process(
    admin_client: TestClient, store: FlakyStore
) -> None:
    r = admin_client.post(PROMOTE, json={"version": "v0003", "reason": "api"}, headers=ADMIN)
    assert r.status_code == 200, r.text
    assert r.json()["version"] == "v0003" and r.json()["previous"] == "v0001"
    wanted = store.get_bundle_version()
    assert wanted is not None and wanted.version == "v0003"
    assert served(admin_client) == "v0003"  # polled at once, not after registry_poll_s

    r = admin_client.post(ROLLBACK, headers=ADMIN)
    assert r.status_code == 200, r.text
    assert r.json()["version"] == "v0001"
    assert served(admin_client) == "v0001"
    history = admin_client.get("/v1/admin/bundles", headers=ADMIN).json()["history"]
    assert [(e["event"], e["reason"]) for e in history[-2:]] == [
        ("promote", "api"),
        ("rollback", "rolled back through the admin API"),
    ]


def test_errors(admin_client: TestClient, registry: BundleRegistry) -> None:
    r = admin_client.post(PROMOTE, json={"version": "v0009"}, headers=ADMIN)
    assert r.status_code == 404 and "no version v0009" in r.json()["detail"]
    r = admin_client.post(PROMOTE, json={"version": "../etc"}, headers=ADMIN)
    assert r.status_code == 422
    r = admin_client.post(PROMOTE, json={"version": "v0002", "extra": 1}, headers=ADMIN)
    assert r.status_code == 422
    r = admin_client.post(ROLLBACK, headers=ADMIN)
    assert r.status_code == 409 and "nothing to roll back" in r.json()["detail"]

    registry.refuse("v0002", {"reason": "worse"})
    r = admin_client.post(PROMOTE, json={"version": "v0002"}, headers=ADMIN)
    assert r.status_code == 409 and "refused (worse)" in r.json()["detail"]
    r = admin_client.post(PROMOTE, json={"version": "v0002", "force": True}, headers=ADMIN)
    assert r.status_code == 200

    (registry.path("v0003") / "catalogue.json").write_text("{}")  # fails its checksum
    r = admin_client.post(PROMOTE, json={"version": "v0003"}, headers=ADMIN)
    assert r.status_code == 422 and "v0003 does not load" in r.json()["detail"]
    assert registry.current() == "v0002"


def test_store_down_is_503_and_a_retry_announces(
    admin_client: TestClient, store: FlakyStore, registry: BundleRegistry
) -> None:
    store.down = True
    r = admin_client.post(PROMOTE, json={"version": "v0002"}, headers=ADMIN)
    assert r.status_code == 503 and "Retry-After" in r.headers
    assert "v0002 is current in the registry" in r.json()["detail"]
    assert registry.current() == "v0002"
    store.down = False
    r = admin_client.post(PROMOTE, json={"version": "v0002"}, headers=ADMIN)
    assert r.status_code == 200 and r.json()["previous"] == "v0002"
    wanted = store.get_bundle_version()
    assert wanted is not None and wanted.version == "v0002"
    assert served(admin_client) == "v0002"


def test_needs_an_admin_key(admin_client: TestClient) -> None:
    assert admin_client.get("/v1/admin/bundles").status_code == 401
    assert admin_client.post(PROMOTE, json={"version": "v0002"}, headers=AUTH).status_code == 403


def test_404_without_a_registry(client: TestClient) -> None:
    r = client.get("/v1/admin/bundles", headers=ADMIN)
    assert r.status_code == 404 and "MICREC_REGISTRY_DIR" in r.json()["detail"]


def test_canary_through_the_admin_api(admin_client: TestClient, registry: BundleRegistry) -> None:
    """promote with ``canary`` starts one (the current version stays), GET shows it, abort
    rolls it back (refused); bad shares and a second decision are 4xx."""
    r = admin_client.post(PROMOTE, json={"version": "v0002", "canary": "150%"}, headers=ADMIN)
    assert r.status_code == 422 and "share" in r.json()["detail"]
    r = admin_client.post(PROMOTE, json={"version": "v0002", "canary": "10%"}, headers=ADMIN)
    assert r.status_code == 200, r.text
    assert r.json()["canary"]["version"] == "v0002" and r.json()["canary"]["share"] == 0.1
    assert registry.current() == "v0001"
    r = admin_client.get("/v1/admin/bundles/canary", headers=ADMIN)
    assert r.status_code == 200 and r.json()["canary"]["decided"] is None
    assert admin_client.get("/readyz").json()["bundle"]["canary"]["version"] == "v0002"
    stats = admin_client.get("/v1/stats", headers=ADMIN).json()
    assert stats["canary"]["version"] == "v0002" and stats["canary"]["share"] == 0.1
    assert admin_client.get("/v1/admin/bundles/canary", headers=AUTH).status_code in (401, 403)
    r = admin_client.post("/v1/admin/bundles/canary/abort", headers=ADMIN)
    assert r.status_code == 200 and r.json()["outcome"] == "rolled back", r.text
    assert registry.show("v0002").refused is not None and registry.current() == "v0001"
    r = admin_client.post("/v1/admin/bundles/canary/promote", headers=ADMIN)
    assert r.status_code == 409 and "no canary" in r.json()["detail"]
    assert admin_client.get("/v1/admin/bundles/canary", headers=ADMIN).json()["canary"] is None
