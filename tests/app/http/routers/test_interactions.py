"""POST /v1/interactions: per-row validation, batch limits, store outage, Idempotency-Key."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

from app.settings import Settings
from tests.app.conftest import AUTH, running, service_of
from tests.app.fakes import FakeEngineFactory, FlakyStore, MemoryStore


def post(client: TestClient, rows: list[dict]) -> tuple[int, dict]:
    r = client.post("/v1/interactions", json={"interactions": rows}, headers=AUTH)
    return r.status_code, r.json()


def test_all_accepted(client: TestClient, memory_store: MemoryStore) -> None:
    status, body = post(
        client,
        [
            {"user_id": "u1", "item_id": "arts-1", "domain": "arts", "timestamp": 1.0},
            {"user_id": "u1", "item_id": "office-2"},
        ],
    )
    assert (status, body) == (200, {"accepted": 2, "rejected": []})
    assert memory_store.get_history("u1") == {"arts": ["arts-1"], "office": ["office-2"]}
    assert memory_store.popularity("arts") == {"arts-1": 1}


def test_bad_rows_rejected_individually(client: TestClient, memory_store: MemoryStore) -> None:
    status, body = post(
        client,
        [
            {"user_id": "u1", "item_id": "arts-1"},
            {"user_id": "u1", "item_id": "ghost"},
            {"user_id": "u1", "item_id": "arts-2", "domain": "office"},
        ],
    )
    assert status == 207
    assert body["accepted"] == 1
    assert body["rejected"] == [
        {"index": 1, "item_id": "ghost", "reason": "unknown item_id"},
        {
            "index": 2,
            "item_id": "arts-2",
            "reason": "domain mismatch: item is in 'arts', not 'office'",
        },
    ]
    assert memory_store.get_history("u1") == {"arts": ["arts-1"]}


def test_malformed_body_fails_whole_batch(client: TestClient, memory_store: MemoryStore) -> None:
    for rows in ([], [{"user_id": "", "item_id": "arts-1"}], [{"item_id": "arts-1"}]):
        status, body = post(client, rows)
        assert status == 422, body
        assert isinstance(body["detail"], str)
    status, body = post(client, [{"user_id": "u", "item_id": "arts-1", "timestamp": -5}])
    assert status == 422 and "timestamp" in body["detail"]
    assert memory_store.get_history("u") == {}


def test_timestamps_out_of_range_refuse_the_batch_without_echoing_them(
    make_settings: Callable[..., Settings], engine_factory: FakeEngineFactory
) -> None:
    """Issue 22 finding 4: 1e308 was accepted (then every retrain failed); a far-future
    stamp would sit among the newest rows, where the retrain window is taken from."""
    store = MemoryStore()
    with running(make_settings(max_timestamp_skew_s=3600), engine_factory, store) as c:
        now = time.time()
        good = {"user_id": "u", "item_id": "arts-1", "timestamp": now + 1800}  # within skew
        for bad in (1e308, now + 2 * 86400):
            r = c.post(
                "/v1/interactions",
                json={"interactions": [good, {**good, "timestamp": bad}]},
                headers=AUTH,
            )
            assert r.status_code == 422, r.text
            detail = r.json()["detail"]
            assert detail.startswith("interactions[1].timestamp is out of range: unix seconds")
            assert detail.endswith("(the server's clock plus max_timestamp_skew_s=3600)")
            assert "e+308" not in r.text and len(r.content) < 300
        # not JSON numbers in the strict sense: the schema refuses them, not echoed either
        for raw in ("Infinity", "NaN", "1" + "0" * 400):
            body = '{"interactions": [{"user_id": "u", "item_id": "arts-1", "timestamp": %s}]}'
            r = c.post(
                "/v1/interactions",
                content=body % raw,
                headers={**AUTH, "Content-Type": "application/json"},
            )
            assert r.status_code == 422 and "timestamp" in r.json()["detail"], r.text
            assert "0" * 40 not in r.text
        assert store.get_history("u") == {}  # nothing of a refused batch was written
        assert c.post("/v1/interactions", json={"interactions": [good]}, headers=AUTH).json() == {
            "accepted": 1,
            "rejected": [],
        }


def test_batch_limit_and_history_cap(
    make_settings: Callable[..., Settings], engine_factory: FakeEngineFactory
) -> None:
    store = MemoryStore()
    with running(make_settings(max_batch=5, history_cap=3), engine_factory, store) as c:
        status, body = post(c, [{"user_id": "u", "item_id": "arts-1"}] * 6)
        assert status == 413 and "max_batch=5" in body["detail"]
        status, _ = post(c, [{"user_id": "u", "item_id": f"arts-{k}"} for k in range(5)])
        assert status == 200
        assert store.get_history("u") == {"arts": ["arts-2", "arts-3", "arts-4"]}


def test_store_down_is_503_with_retry_after(
    make_settings: Callable[..., Settings], engine_factory: FakeEngineFactory
) -> None:
    flaky = FlakyStore(MemoryStore())
    with running(make_settings(store_retry_after_s=7), engine_factory, flaky) as c:
        flaky.down = True
        r = c.post(
            "/v1/interactions",
            json={"interactions": [{"user_id": "u", "item_id": "arts-1"}]},
            headers=AUTH,
        )
        assert r.status_code == 503 and r.headers["Retry-After"] == "7"
        assert "outcome is unknown" in r.json()["detail"]
        r = c.post("/v1/items", json={"item_id": "n", "domain": "arts", "title": "t"}, headers=AUTH)
        assert r.status_code == 503 and r.headers["Retry-After"] == "7"
        assert c.delete("/v1/items/n", headers=AUTH).status_code == 503
        # reads still answer, saying the history is unavailable
        r = c.post(
            "/v1/recommend",
            json={"user_id": "u", "history": ["arts-1"], "domain": "arts"},
            headers=AUTH,
        )
        assert r.status_code == 200
        assert r.json()["history"]["stored"] == "unavailable"
        assert r.json()["user_embedding"] == "inductive"
        ready = c.get("/readyz")
        assert ready.status_code == 200 and ready.json()["status"] == "degraded"
        assert ready.json()["store"]["ok"] is False
        flaky.down = False
        assert c.get("/readyz").json()["status"] == "ready"
        assert service_of(c).health.status() == (True, None)


# --- Idempotency-Key (app/runtime/idempotency.py) --------------------------------------------------
BATCH = {
    "interactions": [
        {"user_id": "ik", "item_id": "arts-1", "timestamp": 1.0},
        {"user_id": "ik", "item_id": "arts-2", "timestamp": 2.0},
        {"user_id": "ik", "item_id": "ghost"},
    ]
}


def test_idempotency_key_retry_stores_the_rows_once(
    make_settings: Callable[..., Settings], engine_factory: FakeEngineFactory
) -> None:
    # The real SQLite store (settings.store_url), end to end.
    with running(make_settings(), engine_factory) as c:
        headers = {**AUTH, "Idempotency-Key": "batch-0001"}
        first = c.post("/v1/interactions", json=BATCH, headers=headers)
        again = c.post("/v1/interactions", json=BATCH, headers=headers)
        assert first.status_code == again.status_code == 207, first.text
        assert first.content == again.content
        assert first.json()["accepted"] == 2 and first.json()["rejected"][0]["index"] == 2
        assert "Idempotent-Replayed" not in first.headers
        assert again.headers["Idempotent-Replayed"] == "true"
        assert service_of(c).store.get_history("ik") == {"arts": ["arts-1", "arts-2"]}
        assert service_of(c).store.popularity("arts") == {"arts-1": 1, "arts-2": 1}

        other = {"interactions": [{"user_id": "ik", "item_id": "arts-3"}]}
        r = c.post("/v1/interactions", json=other, headers=headers)
        assert r.status_code == 422 and "already used for another request" in r.json()["detail"]
        assert service_of(c).store.get_history("ik") == {"arts": ["arts-1", "arts-2"]}

        # A new key is a new request.
        r = c.post("/v1/interactions", json=other, headers={**AUTH, "Idempotency-Key": "b-2"})
        assert r.status_code == 200
        assert service_of(c).store.get_history("ik") == {"arts": ["arts-1", "arts-2", "arts-3"]}


def test_without_a_key_a_re_post_appends_again(
    client: TestClient, memory_store: MemoryStore
) -> None:
    rows = [{"user_id": "nk", "item_id": "arts-1"}]
    for _ in range(2):
        r = client.post("/v1/interactions", json={"interactions": rows}, headers=AUTH)
        assert (r.status_code, r.json()) == (200, {"accepted": 1, "rejected": []})
        assert "Idempotent-Replayed" not in r.headers
    assert memory_store.get_history("nk") == {"arts": ["arts-1", "arts-1"]}
    assert memory_store.popularity("arts") == {"arts-1": 1}


@pytest.mark.parametrize("key", ["", "k" * 256, "caf\u00e9"], ids=["empty", "long", "non-ascii"])
def test_bad_idempotency_key_is_422(
    client: TestClient, memory_store: MemoryStore, key: str
) -> None:
    r = client.post(
        "/v1/interactions",
        json={"interactions": [{"user_id": "bk", "item_id": "arts-1"}]},
        headers={**AUTH, "Idempotency-Key": key.encode("latin-1")},  # type: ignore[dict-item]
    )
    assert r.status_code == 422 and "printable ASCII" in r.json()["detail"]
    assert memory_store.get_history("bk") == {}


def test_failed_keyed_write_can_be_retried_with_the_same_key(
    make_settings: Callable[..., Settings], engine_factory: FakeEngineFactory
) -> None:
    flaky = FlakyStore(MemoryStore())
    with running(make_settings(), engine_factory, flaky) as c:
        headers = {**AUTH, "Idempotency-Key": "after-outage"}
        body = {"interactions": [{"user_id": "fk", "item_id": "arts-1"}]}
        flaky.down = True
        assert c.post("/v1/interactions", json=body, headers=headers).status_code == 503
        flaky.down = False
        r = c.post("/v1/interactions", json=body, headers=headers)
        assert r.status_code == 200 and "Idempotent-Replayed" not in r.headers
        assert flaky.get_history("fk") == {"arts": ["arts-1"]}
