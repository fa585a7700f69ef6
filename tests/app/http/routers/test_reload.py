"""Hot reload: version switch, failures keep the old model, concurrency with requests."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from fastapi.testclient import TestClient

from app.settings import Settings
from tests.app.conftest import ADMIN, AUTH, running, served_by_model, service_of
from tests.app.fakes import FakeEngineFactory, MemoryStore


def reload(client: TestClient, path: Path | str | None) -> dict:
    body = {} if path is None else {"bundle_path": str(path)}
    r = client.post("/v1/admin/reload", json=body, headers=ADMIN)
    assert r.status_code == 202, r.text
    assert r.json()["status"] == "loading"
    return service_of(client).loader.wait(30).model_dump()


def test_reload_switches_version_and_keeps_registered_items(
    client: TestClient, engine_factory: FakeEngineFactory, tmp_path: Path
) -> None:
    client.post("/v1/items", json={"item_id": "keep", "domain": "arts", "title": "k"}, headers=AUTH)
    v2 = engine_factory.make_bundle(tmp_path / "v2", version="fake-v2")
    done = reload(client, v2)
    assert done["status"] == "succeeded" and done["model_version"] == "fake-v2"
    assert client.get("/v1/model").json()["model_version"] == "fake-v2"
    r = client.post("/v1/recommend", json={"domain": "arts"})
    assert r.json()["model_version"] == "fake-v2"
    assert served_by_model(client, "keep", "arts")  # replayed into the new model
    status = client.get("/v1/admin/reload", headers=ADMIN).json()
    assert status["status"] == "succeeded" and status["bundle_path"] == str(v2)
    # no body: reload the current bundle path again
    assert reload(client, None)["bundle_path"] == str(v2)


def test_failed_reloads_keep_old_model(
    client: TestClient, engine_factory: FakeEngineFactory, tmp_path: Path
) -> None:
    done = reload(client, tmp_path / "missing")
    assert done["status"] == "failed" and "not a bundle" in done["error"]
    bad = engine_factory.make_bundle(tmp_path / "tampered", version="fake-bad")
    manifest = bad / "fake-bundle.json"
    manifest.write_text(manifest.read_text().replace("fake-bad", "fake-evil"))
    done = reload(client, bad)
    assert done["status"] == "failed" and "tampered" in done["error"]
    assert client.get("/v1/model").json()["model_version"] == "fake-v1"
    ready = client.get("/readyz").json()
    assert ready["status"] == "degraded" and "last reload failed" in ready["degraded"][0]


def test_second_reload_while_running_is_409(
    client: TestClient, engine_factory: FakeEngineFactory, tmp_path: Path
) -> None:
    v2 = engine_factory.make_bundle(tmp_path / "v2", version="fake-v2")
    engine_factory.gate = threading.Event()
    assert (
        client.post("/v1/admin/reload", json={"bundle_path": str(v2)}, headers=ADMIN).status_code
        == 202
    )
    r = client.post("/v1/admin/reload", json={}, headers=ADMIN)
    assert r.status_code == 409 and "already running" in r.json()["detail"]
    assert client.get("/v1/admin/reload", headers=ADMIN).json()["status"] == "loading"
    # the old model keeps serving while the new one loads
    assert (
        client.post("/v1/recommend", json={"domain": "arts"}).json()["model_version"] == "fake-v1"
    )
    engine_factory.gate.set()
    assert service_of(client).loader.wait(30).model_version == "fake-v2"


def test_reload_under_concurrent_requests(
    make_settings: Callable[..., Settings], engine_factory: FakeEngineFactory, tmp_path: Path
) -> None:
    versions = [
        engine_factory.make_bundle(tmp_path / f"v{k}", version=f"fake-v{k}") for k in (2, 3, 4)
    ]
    errors: list[str] = []
    seen: set[str] = set()
    stop = threading.Event()
    with running(make_settings(), engine_factory, MemoryStore()) as c:

        def hammer(worker: int) -> None:
            k = 0
            while not stop.is_set():
                k += 1
                r = c.post(
                    "/v1/recommend",
                    json={"history": ["arts-1", "office-2"], "domain": "arts", "n": 5},
                )
                if r.status_code != 200 or len(r.json()["items"]) != 5:
                    errors.append(f"{r.status_code} {r.text}")
                else:
                    seen.add(r.json()["model_version"])
                w = c.post(
                    "/v1/items",
                    json={"item_id": f"w{worker}-{k}", "domain": "office", "title": "x"},
                    headers=AUTH,
                )
                if w.status_code != 201:
                    errors.append(f"{w.status_code} {w.text}")

        threads = [threading.Thread(target=hammer, args=(w,)) for w in range(3)]
        for t in threads:
            t.start()
        try:
            for v in versions:
                assert reload(c, v)["status"] == "succeeded"
        finally:
            stop.set()
            for t in threads:
                t.join(30)
        assert errors == []
        assert c.get("/v1/model").json()["model_version"] == "fake-v4"
        assert "fake-v1" in seen or "fake-v2" in seen
        # every item registered during the reloads is in the final model
        state = service_of(c).state
        assert state is not None
        registered = {i for i in state.registered}
        stored = {i.item_id for i in service_of(c).store.list_items()}
        assert registered == stored
        assert all(i in state.indexes["office"] for i in stored)


def test_admin_requires_key(client: TestClient) -> None:
    assert client.post("/v1/admin/reload", json={}).status_code == 401
    assert client.get("/v1/admin/reload").status_code == 401
