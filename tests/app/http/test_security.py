"""X-API-Key: writes always, reads when configured, probes never; keys never logged."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

from app.settings import Settings
from tests.app.conftest import ADMIN, API_KEY, AUTH, running
from tests.app.fakes import FakeEngineFactory, MemoryStore

WRITE = {"item_id": "sec-1", "domain": "arts", "title": "t"}
PROBES = ("/healthz", "/readyz", "/metrics")


def test_writes_need_a_valid_key(client: TestClient) -> None:
    r = client.post("/v1/items", json=WRITE)
    assert r.status_code == 401 and "missing X-API-Key" in r.json()["detail"]
    assert r.headers["WWW-Authenticate"] == "APIKey"
    r = client.post("/v1/items", json=WRITE, headers={"X-API-Key": "wrong-key-123"})
    assert r.status_code == 401 and r.json()["detail"] == "invalid API key"
    assert client.post("/v1/items", json=WRITE, headers=AUTH).status_code == 201
    for method, path in (("put", "/v1/items/sec-1"), ("delete", "/v1/items/sec-1")):
        assert getattr(client, method)(path).status_code == 401
    r = client.post(
        "/v1/interactions", json={"interactions": [{"user_id": "u", "item_id": "arts-1"}]}
    )
    assert r.status_code == 401


def test_reads_open_by_default_probes_always(client: TestClient) -> None:
    assert client.post("/v1/recommend", json={"domain": "arts"}).status_code == 200
    assert client.get("/v1/model").status_code == 200
    for path in PROBES:
        assert client.get(path).status_code == 200


def test_reads_need_key_when_configured(
    make_settings: Callable[..., Settings], engine_factory: FakeEngineFactory
) -> None:
    settings = make_settings(require_key_for_reads=True, api_keys=["other-key-xyz", API_KEY])
    with running(settings, engine_factory, MemoryStore()) as c:
        assert c.post("/v1/recommend", json={"domain": "arts"}).status_code == 401
        assert c.get("/v1/items/arts-1").status_code == 401
        assert c.get("/v1/users/u/recommendations", params={"domain": "arts"}).status_code == 401
        assert c.get("/v1/model").status_code == 401
        assert c.get("/v1/model", headers=AUTH).status_code == 200
        assert c.get("/v1/model", headers={"X-API-Key": "other-key-xyz"}).status_code == 200
        for path in PROBES:
            assert c.get(path).status_code == 200


def test_auth_disabled_is_logged_loudly(
    make_settings: Callable[..., Settings],
    engine_factory: FakeEngineFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with (
        caplog.at_level(logging.WARNING),
        running(make_settings(api_keys=[]), engine_factory, MemoryStore()) as c,
    ):
        assert c.post("/v1/items", json=WRITE).status_code == 201
    assert "AUTHENTICATION DISABLED" in caplog.text


def test_keys_never_logged(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        client.post("/v1/items", json=WRITE, headers={"X-API-Key": "wrong-key-123"})
        client.post("/v1/items", json=WRITE, headers=AUTH)
        client.post("/v1/admin/reload", json={}, headers=ADMIN)
    assert API_KEY not in caplog.text and "wrong-key-123" not in caplog.text


def test_openapi_declares_the_key_scheme(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert spec["components"]["securitySchemes"]["APIKeyHeader"]["name"] == "X-API-Key"
