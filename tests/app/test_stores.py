"""The service over the real state stores (SQLite file, real redis-server): end to end,
restart replay, replicas following each other, and a store outage."""

from __future__ import annotations

import importlib.util
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.settings import Settings
from tests.app.conftest import AUTH, running, served_by_model, service_of
from tests.app.fakes import FakeEngineFactory, wait_until

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("app.store.factory") is None,
    reason="app/store/factory.py not available yet",
)


def _redis_server() -> Any:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server not installed (make system-deps)")
    try:
        from bench.redis_server import RedisServer
    except ImportError:
        pytest.skip("bench/redis_server.py not available yet")
    return RedisServer()


@pytest.fixture(params=["sqlite", "redis"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'state.db'}"
        return
    server = _redis_server()
    with server:
        request.node.redis_server = server
        yield server.url


def started(
    make_settings: Callable[..., Settings], engine_factory: FakeEngineFactory, url: str
) -> Any:
    return running(make_settings(store_url=url), engine_factory)


def test_end_to_end(
    store_url: str, make_settings: Callable[..., Settings], engine_factory: FakeEngineFactory
) -> None:
    with started(make_settings, engine_factory, store_url) as c:
        r = c.post(
            "/v1/items",
            json={"item_id": "mug", "domain": "arts", "title": "red mug", "categories": ["cups"]},
            headers=AUTH,
        )
        assert r.status_code == 201, r.text
        rows = [{"user_id": "u1", "item_id": i} for i in ("mug", "arts-3", "office-4")]
        r = c.post("/v1/interactions", json={"interactions": rows}, headers=AUTH)
        assert r.json() == {"accepted": 3, "rejected": []}
        out = c.post(
            "/v1/recommend", json={"user_id": "u1", "domain": "arts", "n": 5}, headers=AUTH
        ).json()
        assert out["user_embedding"] == "inductive"
        assert out["history"]["stored"] == "ok" and out["history"]["items_used"] == 3
        assert not {"mug", "arts-3"} & {i["item_id"] for i in out["items"]}
        assert c.get("/readyz").json()["store"]["ok"] is True


def test_restart_replays_registered_items(
    store_url: str, make_settings: Callable[..., Settings], engine_factory: FakeEngineFactory
) -> None:
    with started(make_settings, engine_factory, store_url) as c:
        for k in range(3):
            body = {"item_id": f"n{k}", "domain": "office", "title": f"lamp {k}"}
            assert c.post("/v1/items", json=body, headers=AUTH).status_code == 201
        assert c.delete("/v1/items/n1", headers=AUTH).status_code == 204
        rows = [{"user_id": "u2", "item_id": "n2"}]
        c.post("/v1/interactions", json={"interactions": rows}, headers=AUTH)
    with started(make_settings, engine_factory, store_url) as c:
        assert c.get("/v1/items/n0").json()["title"] == "lamp 0"
        assert c.get("/v1/items/n1").status_code == 404
        assert c.get("/v1/model").json()["indexes"]["office"]["registered_items"] == 2
        out = c.post(
            "/v1/recommend",
            json={"user_id": "u2", "domain": "office", "n": 2000, "exclude_seen": False},
            headers=AUTH,
        ).json()
        assert out["history"]["items_used"] == 1  # stored history survives the restart
        assert "n2" in {i["item_id"] for i in out["items"]}  # replayed into the index


def test_replicas_see_each_other_within_a_second(
    store_url: str, make_settings: Callable[..., Settings], engine_factory: FakeEngineFactory
) -> None:
    settings = make_settings(store_url=store_url, replica_sync_interval_s=0.5)
    with running(settings, engine_factory) as a, running(settings, engine_factory) as b:
        r = a.post("/v1/items", json={"item_id": "x", "domain": "arts", "title": "x"}, headers=AUTH)
        assert r.status_code == 201
        assert wait_until(lambda: b.get("/v1/items/x").status_code == 200)
        assert served_by_model(b, "x", "arts")
        # B may not post a duplicate of A's item
        r = b.post("/v1/items", json={"item_id": "x", "domain": "arts", "title": "y"}, headers=AUTH)
        assert r.status_code == 409
        assert a.delete("/v1/items/x", headers=AUTH).status_code == 204
        assert wait_until(lambda: b.get("/v1/items/x").status_code == 404)
        assert "x" not in service_of(b).state.indexes["arts"]  # type: ignore[union-attr]


def test_redis_outage(
    tmp_path: Path, make_settings: Callable[..., Settings], engine_factory: FakeEngineFactory
) -> None:
    server = _redis_server()
    with server, started(make_settings, engine_factory, server.url) as c:
        c.post(
            "/v1/interactions",
            json={"interactions": [{"user_id": "u", "item_id": "arts-1"}]},
            headers=AUTH,
        )
        server.stop()
        r = c.post("/v1/items", json={"item_id": "z", "domain": "arts", "title": "z"}, headers=AUTH)
        assert r.status_code == 503 and "Retry-After" in r.headers
        r = c.post(
            "/v1/recommend",
            json={"user_id": "u", "history": ["arts-2"], "domain": "arts"},
            headers=AUTH,
        )
        assert r.status_code == 200
        assert r.json()["history"]["stored"] == "unavailable"
        assert r.json()["user_embedding"] == "inductive"
        ready = c.get("/readyz")
        assert ready.status_code == 200 and ready.json()["status"] == "degraded"
        server.start()
        assert wait_until(lambda: c.get("/readyz").json()["status"] == "ready")
        r = c.post("/v1/items", json={"item_id": "z", "domain": "arts", "title": "z"}, headers=AUTH)
        assert r.status_code == 201


def test_erasure_is_honoured_by_another_replica_and_after_a_restart(
    store_url: str, make_settings: Callable[..., Settings], engine_factory: FakeEngineFactory
) -> None:
    """Two services on one store: an erasure on A counts on B's very next read (B does not
    even follow the item feed), and the popularity B mirrors loses the user's counts at its
    next refresh."""
    settings = make_settings(store_url=store_url, replica_sync_interval_s=0)

    def recommend(client: TestClient, user_id: str) -> dict[str, Any]:
        body = {"user_id": user_id, "domain": "arts", "n": 5}
        r = client.post("/v1/recommend", json=body, headers=AUTH)
        assert r.status_code == 200, r.text
        out: dict[str, Any] = r.json()
        out.pop("recommendation_id")  # new for every answer; the rest is compared
        return out

    with running(settings, engine_factory) as a, running(settings, engine_factory) as b:
        rows = [{"user_id": "u-bundle", "item_id": "arts-3"}]
        assert a.post("/v1/interactions", json={"interactions": rows}, headers=AUTH).is_success
        assert recommend(b, "u-bundle")["history"]["items_used"] == 3
        assert wait_until(lambda: service_of(b).popularity.count("arts", "arts-3") == 1)

        assert a.delete("/v1/users/u-bundle", headers=AUTH).status_code == 204

        # B's very next read: the user-dependent part of the answer is an unknown user's
        # (the popular scores may still move while B's popularity refresh catches up)
        erased, unknown = recommend(b, "u-bundle"), recommend(b, "never-seen")
        for key in ("user_embedding", "history", "warnings"):
            assert erased[key] == unknown[key], key
        assert wait_until(lambda: service_of(b).popularity.count("arts", "arts-3") == 0)
        assert recommend(b, "u-bundle") == recommend(b, "never-seen")
    with running(settings, engine_factory) as c:
        out = recommend(c, "u-bundle")
        assert out["user_embedding"] == "fallback" and out["history"]["known_user"] is False


def test_an_erasure_over_http_purges_the_redis_append_only_file(
    make_settings: Callable[..., Settings], engine_factory: FakeEngineFactory
) -> None:
    """DELETE /v1/users/{id} starts the AOF rewrite (the first one of an interval starts
    at once): once it has completed, no file of the server holds the id, nor the keyed
    request that named the user."""
    victim = "victim-c3d2e1"
    with (
        _redis_server() as server,
        running(make_settings(store_url=server.url), engine_factory) as c,
    ):
        rows = [{"user_id": victim, "item_id": "arts-3"}, {"user_id": "v", "item_id": "arts-4"}]
        keyed = {**AUTH, "Idempotency-Key": f"import-{victim}"}
        assert c.post("/v1/interactions", json={"interactions": rows}, headers=keyed).is_success

        def holding() -> list[str]:
            files = [p for p in Path(server.data_dir).rglob("*") if p.is_file()]
            return [p.name for p in files if victim.encode() in p.read_bytes()]

        assert holding()  # the AOF has the writes
        assert c.delete(f"/v1/users/{victim}", headers=AUTH).status_code == 204
        assert wait_until(lambda: not holding(), timeout=30), holding()
