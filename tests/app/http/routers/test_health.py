"""Probes: /healthz always, /readyz 503 while loading or failed, 200 (maybe degraded) after."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from app.settings import Settings
from tests.app.conftest import ADMIN, running, service_of
from tests.app.fakes import FakeEngineFactory, MemoryStore


def test_probes_during_and_after_start_up(
    make_settings: Callable[..., Settings], engine_factory: FakeEngineFactory
) -> None:
    engine_factory.gate = threading.Event()  # hold the model load
    with running(make_settings(), engine_factory, MemoryStore(), wait=False) as c:
        assert c.get("/healthz").json() == {"status": "ok"}
        r = c.get("/readyz")
        assert r.status_code == 503 and r.json()["status"] == "loading"
        r = c.post("/v1/recommend", json={"domain": "arts"})
        assert r.status_code == 503 and "loading" in r.json()["detail"]
        assert "Retry-After" in r.headers
        engine_factory.gate.set()
        assert service_of(c).wait_ready(30)
        r = c.get("/readyz")
        assert r.status_code == 200
        body = r.json()
        assert body["status"] == "ready" and body["model_version"] == "fake-v1"
        assert body["domains"] == ["arts", "office"] and body["store"] == {
            "ok": True,
            "detail": None,
        }


def test_failed_start_up_load(
    tmp_path: Path, make_settings: Callable[..., Settings], engine_factory: FakeEngineFactory
) -> None:
    with running(
        make_settings(bundle_path=tmp_path / "nope"), engine_factory, MemoryStore(), wait=False
    ) as c:
        assert service_of(c).wait_ready(30) is False
        assert c.get("/healthz").status_code == 200
        r = c.get("/readyz")
        assert r.status_code == 503
        assert r.json()["status"] == "failed" and "GET /v1/admin/reload" in r.json()["error"]
        assert str(tmp_path) not in r.text  # the path is for admins only
        r = c.get("/v1/admin/reload", headers=ADMIN)
        assert "not a bundle" in r.json()["error"]
        r = c.get("/v1/model")
        assert r.status_code == 503 and "no model loaded" in r.json()["detail"]
