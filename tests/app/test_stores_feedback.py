"""Feedback over HTTP on the real stores (SQLite file, real redis-server): the record is
written by the recording thread, feedback counts in the shared counters that a second
replica reads, and DELETE /v1/users/{id} removes the user's records."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from app.settings import Settings
from bench.redis_server import RedisServer
from tests.app.conftest import ADMIN, AUTH, running
from tests.app.fakes import FakeEngineFactory, wait_until


@pytest.fixture(params=["sqlite", "redis"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'state.db'}"
        return
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server not installed (make system-deps)")
    with RedisServer() as server:
        yield server.url


def test_feedback_and_erasure_on_a_real_store(
    store_url: str, make_settings: Callable[..., Settings], engine_factory: FakeEngineFactory
) -> None:
    settings = make_settings(store_url=store_url, record_flush_s=0.05)
    with running(settings, engine_factory) as a, running(settings, engine_factory) as b:
        answer = a.post(
            "/v1/recommend", json={"user_id": "u1", "domain": "arts", "n": 3}, headers=AUTH
        ).json()
        rec_id = answer["recommendation_id"]
        path = f"/v1/recommendations/{rec_id}"
        # written by replica a's recording thread, readable on replica b
        assert wait_until(lambda: b.get(path, headers=AUTH).status_code == 200)
        item = answer["items"][0]["item_id"]
        events = [
            {"recommendation_id": rec_id, "item_id": item, "event": e}
            for e in ("impression", "click")
        ]
        r = b.post("/v1/feedback", json={"events": events}, headers=AUTH)
        assert r.json() == {"accepted": 2, "duplicates": 0, "interactions": 1}
        online = a.get("/v1/stats", headers=AUTH).json()["online"]
        assert [(m["recommendations"], m["clicks"], m["ctr"]) for m in online] == [(1, 1, 1.0)]
        assert b.get("/v1/users/u1/history", headers=AUTH).json()["domains"] == {"arts": [item]}

        assert a.delete("/v1/users/u1", headers=ADMIN).status_code == 204
        assert b.get(path, headers=AUTH).status_code == 404
        assert b.post("/v1/feedback", json={"events": events}, headers=AUTH).status_code == 404
