"""DELETE /v1/users/{user_id}: user erasure over HTTP (keys, effect on recommendations,
idempotence, outage). Both real stores and replicas: tests/app/test_stores.py."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from app.settings import Settings
from tests.app.conftest import ADMIN, AUTH, running, service_of
from tests.app.fakes import FakeEngineFactory, FlakyStore, MemoryStore

BUNDLE_USER = "u-bundle"  # the fake bundle's user: arts history arts-1, arts-2


def recommend(client: TestClient, user_id: str, domain: str = "arts") -> dict[str, Any]:
    r = client.post(
        "/v1/recommend", json={"user_id": user_id, "domain": domain, "n": 5}, headers=AUTH
    )
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    body.pop("recommendation_id")  # new for every answer; the rest is compared
    return body


def test_erasure_needs_an_api_or_admin_key(client: TestClient) -> None:
    r = client.delete(f"/v1/users/{BUNDLE_USER}")
    assert r.status_code == 401 and r.headers["WWW-Authenticate"] == "APIKey"
    r = client.delete(f"/v1/users/{BUNDLE_USER}", headers={"X-API-Key": "wrong"})
    assert r.status_code == 401
    assert recommend(client, BUNDLE_USER)["history"]["known_user"] is True  # nothing erased
    assert client.delete(f"/v1/users/{BUNDLE_USER}", headers=AUTH).status_code == 204
    assert client.delete(f"/v1/users/{BUNDLE_USER}", headers=ADMIN).status_code == 204


def test_erased_user_is_served_as_an_unknown_user(
    client: TestClient, memory_store: MemoryStore
) -> None:
    rows = [{"user_id": BUNDLE_USER, "item_id": "arts-3"}, {"user_id": "v", "item_id": "arts-3"}]
    assert client.post("/v1/interactions", json={"interactions": rows}, headers=AUTH).is_success
    before = recommend(client, BUNDLE_USER)
    assert before["user_embedding"] == "inductive"
    assert before["history"]["items_used"] == 3  # bundle arts-1, arts-2 + stored arts-3
    popularity = service_of(client).popularity
    assert popularity.count("arts", "arts-3") == 2

    assert client.delete(f"/v1/users/{BUNDLE_USER}", headers=AUTH).status_code == 204

    after = recommend(client, BUNDLE_USER)
    assert after == recommend(client, "never-seen")
    assert after["user_embedding"] == "fallback" and after["history"]["known_user"] is False
    assert memory_store.get_history(BUNDLE_USER) == {}
    assert memory_store.is_erased(BUNDLE_USER)
    assert memory_store.popularity("arts") == {"arts-3": 1}  # v's count stays
    assert popularity.count("arts", "arts-3") == 1  # this replica's book at once
    r = client.get(f"/v1/users/{BUNDLE_USER}/recommendations?domain=arts", headers=AUTH)
    assert r.json()["user_embedding"] == "fallback"


def test_erasure_is_idempotent_and_says_nothing_about_existence(
    client: TestClient, memory_store: MemoryStore
) -> None:
    answers = [
        client.delete(f"/v1/users/{user}", headers=AUTH)
        for user in (BUNDLE_USER, BUNDLE_USER, "never-seen", "never-seen")
    ]
    assert [r.status_code for r in answers] == [204] * 4
    assert {r.content for r in answers} == {b""}
    erased = memory_store.erased_users()
    assert len(erased) == 2 and BUNDLE_USER in erased and "never-seen" in erased


def test_user_ids_are_validated(client: TestClient, memory_store: MemoryStore) -> None:
    for bad in ("a%01b", "x" * 257, "a%E2%80%AEb"):  # control char, too long, bidi override
        r = client.delete(f"/v1/users/{bad}", headers=AUTH)
        assert r.status_code == 422, (bad, r.text)
    assert len(memory_store.erased_users()) == 0


def test_new_interactions_after_erasure_are_used_but_not_the_bundle_history(
    client: TestClient,
) -> None:
    assert client.delete(f"/v1/users/{BUNDLE_USER}", headers=AUTH).status_code == 204
    rows = [{"user_id": BUNDLE_USER, "item_id": "arts-4"}]
    assert client.post("/v1/interactions", json={"interactions": rows}, headers=AUTH).is_success
    out = recommend(client, BUNDLE_USER)
    assert out["user_embedding"] == "inductive" and out["history"]["items_used"] == 1


def test_store_outage(make_settings: Callable[..., Settings]) -> None:
    """503 while the store is down; once erased here, an outage does not bring the bundle
    history back (the read falls back to what this process knows)."""
    store = FlakyStore(MemoryStore())
    with running(make_settings(), FakeEngineFactory(), store) as c:
        store.down = True
        r = c.delete(f"/v1/users/{BUNDLE_USER}", headers=AUTH)
        assert r.status_code == 503 and "Retry-After" in r.headers
        assert recommend(c, BUNDLE_USER)["user_embedding"] == "inductive"  # not erased
        store.down = False
        assert c.delete(f"/v1/users/{BUNDLE_USER}", headers=AUTH).status_code == 204
        store.down = True
        out = recommend(c, BUNDLE_USER)
        assert out["history"]["stored"] == "unavailable"
        assert out["user_embedding"] == "fallback"


def test_erasure_leaves_the_id_in_no_file_of_the_sqlite_store(
    make_settings: Callable[..., Settings], engine_factory: FakeEngineFactory, tmp_path: Path
) -> None:
    """Issue 22: the erased id stayed in the WAL, and the answer of a keyed request
    naming the user (its client key naming the user too) stayed 24 h. After the 204,
    neither the database, its WAL nor its shared-memory file holds the id, and a retry
    of the keyed request runs again instead of replaying."""
    victim = "victim-9e2b7c"
    settings = make_settings()
    assert settings.store_url.startswith("sqlite:///")
    with running(settings, engine_factory) as c:
        rows = [{"user_id": victim, "item_id": "arts-3"}, {"user_id": "v", "item_id": "arts-3"}]
        keyed = {**AUTH, "Idempotency-Key": f"import-{victim}-1"}
        body = {"interactions": rows}
        assert c.post("/v1/interactions", json=body, headers=keyed).status_code == 200
        replay = c.post("/v1/interactions", json=body, headers=keyed)
        assert replay.headers.get("Idempotent-Replayed") == "true"

        assert c.delete(f"/v1/users/{victim}", headers=AUTH).status_code == 204

        files = sorted(tmp_path.glob("state.db*"))
        assert [f.name for f in files][:2] == ["state.db", "state.db-shm"]
        assert [f.name for f in files if victim.encode() in f.read_bytes()] == []
        again = c.post("/v1/interactions", json=body, headers=keyed)
        assert again.status_code == 200 and "Idempotent-Replayed" not in again.headers
