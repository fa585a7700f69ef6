"""POST /v1/recommend and GET /v1/users/{id}/recommendations over HTTP: every user path."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

import app.lifecycle.state as state_module
from app.settings import Settings
from app.store.base import UserRead
from tests.app.conftest import AUTH, catalogue_ids, running
from tests.app.fakes import FakeEngineFactory, MemoryStore


def rec(client: TestClient, **body: object) -> dict:
    r = client.post("/v1/recommend", json=body, headers=AUTH)  # user reads need a key
    assert r.status_code == 200, r.text
    return r.json()


def test_inline_history_in_domain_is_inductive(client: TestClient) -> None:
    arts = catalogue_ids(client, "arts")
    out = rec(client, history=arts[:3], domain="arts", n=5)
    assert out["user_embedding"] == "inductive"
    assert out["model_version"] == "fake-v1" and out["domain"] == "arts" and out["n"] == 5
    assert len(out["items"]) == 5
    assert all(i["source"] == "model" for i in out["items"])
    assert not {i["item_id"] for i in out["items"]} & set(arts[:3])  # exclude_seen
    scores = [i["score"] for i in out["items"]]
    assert scores == sorted(scores, reverse=True)


def test_history_only_in_other_domain_is_cross_domain(client: TestClient) -> None:
    office = catalogue_ids(client, "office")
    out = rec(client, history=office[:2], domain="arts", n=3)
    assert out["user_embedding"] == "cross_domain"
    assert all(i["item_id"].startswith("arts") and i["source"] == "model" for i in out["items"])


def test_known_user_uses_stored_history(client: TestClient) -> None:
    arts = catalogue_ids(client, "arts")
    r = client.post(
        "/v1/interactions",
        json={"interactions": [{"user_id": "u7", "item_id": i} for i in arts[:4]]},
        headers=AUTH,
    )
    assert r.status_code == 200
    out = rec(client, user_id="u7", domain="arts", n=10)
    assert out["user_embedding"] == "inductive"
    assert out["history"] == {
        "stored": "ok",
        "known_user": True,
        "items_used": 4,
        "unknown_ids": [],
    }
    assert not {i["item_id"] for i in out["items"]} & set(arts[:4])
    # the bundle's own users are known too (their history ships in the bundle)
    bundle_user = rec(client, user_id="u-bundle", domain="office", n=3)
    assert bundle_user["user_embedding"] == "cross_domain"
    assert bundle_user["history"]["known_user"] is True


def test_known_user_plus_inline_history_are_merged(client: TestClient) -> None:
    arts, office = catalogue_ids(client, "arts"), catalogue_ids(client, "office")
    client.post(
        "/v1/interactions",
        json={"interactions": [{"user_id": "u8", "item_id": office[0]}]},
        headers=AUTH,
    )
    out = rec(client, user_id="u8", history=[arts[5]], domain="arts", n=3)
    assert out["user_embedding"] == "inductive"
    assert out["history"]["items_used"] == 2


def test_unknown_user_falls_back_with_sources(client: TestClient) -> None:
    out = rec(client, user_id="nobody", domain="office", n=4)
    assert out["user_embedding"] == "fallback"
    assert [i["source"] for i in out["items"]] == ["popular"] * 4
    assert out["history"]["known_user"] is False
    anonymous = rec(client, domain="office", n=2)
    assert anonymous["user_embedding"] == "fallback"


def test_fallback_chain_fills_with_latest(
    make_settings: Callable[..., Settings], engine_factory: FakeEngineFactory
) -> None:
    with running(make_settings(fallback_chain=["latest"]), engine_factory, MemoryStore()) as c:
        for k in range(3):
            r = c.post(
                "/v1/items",
                json={"item_id": f"new{k}", "domain": "arts", "title": f"t{k}"},
                headers=AUTH,
            )
            assert r.status_code == 201
        out = rec(c, domain="arts", n=5)
        assert out["user_embedding"] == "fallback"
        # only 3 registered items exist: latest first, no padding
        assert [(i["item_id"], i["source"]) for i in out["items"]] == [
            ("new2", "latest"),
            ("new1", "latest"),
            ("new0", "latest"),
        ]


def test_unknown_history_ids_are_reported(client: TestClient) -> None:
    out = rec(client, history=["no-such-item"], domain="arts", n=2)
    assert out["user_embedding"] == "fallback"
    assert out["history"]["unknown_ids"] == ["no-such-item"]
    assert out["warnings"]


def test_exclude_category_and_clamped_n(client: TestClient) -> None:
    arts = catalogue_ids(client, "arts")
    first = rec(client, history=arts[:2], domain="arts", n=3)["items"][0]["item_id"]
    out = rec(client, history=arts[:2], domain="arts", n=3, exclude=[first])
    assert first not in {i["item_id"] for i in out["items"]}
    cat = rec(client, history=arts[:2], domain="arts", n=50, category="GROUP1")
    ids = [i["item_id"] for i in cat["items"]]
    # fake categories: "arts|group<k % 3>"; 60 items -> 20 in group1, 2 seen may be among them
    assert ids and all(int(i.split("-")[1]) % 3 == 1 for i in ids)
    everything = rec(client, history=arts[:2], domain="arts", n=2000, exclude_seen=False)
    assert len(everything["items"]) == len(arts)  # n larger than the index: clamped


def test_fallback_respects_category_and_exclusions(client: TestClient) -> None:
    out = rec(client, domain="arts", n=3, category="group2", exclude=["arts-2"])
    assert [i["item_id"] for i in out["items"]] == ["arts-5", "arts-8", "arts-11"]


def test_bad_requests_are_4xx_with_messages(client: TestClient) -> None:
    cases = [
        ({"domain": "toys"}, 422, "valid domains: arts, office"),
        ({"domain": "arts", "n": 0}, 422, "n"),
        ({"domain": "arts", "n": 2001}, 422, "max_n=2000"),
        ({"domain": "arts", "exclude_sen": True}, 422, "exclude_sen"),
        ({"n": 3}, 422, "domain"),
        ({"domain": "arts", "history": "arts-1"}, 422, "history"),
        ({"domain": "arts", "history": ["x"] * 1001}, 413, "max_history=1000"),
    ]
    for body, status, needle in cases:
        r = client.post("/v1/recommend", json=body)
        assert r.status_code == status, (body, r.text)
        assert needle in r.json()["detail"], (body, r.json())
    r = client.post(
        "/v1/recommend", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 422 and "JSON" in r.json()["detail"]


def test_get_user_recommendations(client: TestClient) -> None:
    r = client.get(
        "/v1/users/u-bundle/recommendations", params={"domain": "arts", "n": 3}, headers=AUTH
    )
    assert r.status_code == 200
    body = r.json()
    assert body["user_embedding"] == "inductive" and len(body["items"]) == 3
    assert (
        client.get("/v1/users/u-bundle/recommendations", params={"n": 3}, headers=AUTH).status_code
        == 422
    )
    r = client.get("/v1/users/u1/recommendations", params={"domain": "zzz"}, headers=AUTH)
    assert r.status_code == 422 and "valid domains" in r.json()["detail"]


def test_empty_domain_index_gives_empty_list(
    tmp_path: Path, make_settings: Callable[..., Settings]
) -> None:
    factory = FakeEngineFactory({"arts": 10, "empty": 0})
    bundle = factory.make_bundle(tmp_path / "b0")
    with running(make_settings(bundle_path=bundle), factory, MemoryStore()) as c:
        out = rec(c, history=["arts-1"], domain="empty", n=5)
        assert out["items"] == [] and out["warnings"]
        assert out["user_embedding"] == "cross_domain"
        assert rec(c, domain="empty", n=5)["items"] == []


@pytest.mark.parametrize("exact_max", [0, 20_000])
def test_category_filter_paths_agree(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, exact_max: int
) -> None:
    """Selective filters score their items exactly, broad ones search the index and keep
    matches (FILTER_EXACT_MAX_ITEMS = 0 forces the search): same answers either way."""
    monkeypatch.setattr(state_module, "FILTER_EXACT_MAX_ITEMS", exact_max)
    arts = catalogue_ids(client, "arts")
    ranked = rec(client, history=arts[:2], domain="arts", n=2000)["items"]
    want = [i["item_id"] for i in ranked if int(i["item_id"].split("-")[1]) % 3 == 1][:7]
    got = rec(client, history=arts[:2], domain="arts", n=7, category="arts|group1")["items"]
    assert [i["item_id"] for i in got] == want
    assert all(i["source"] == "model" for i in got)
    # Fallback (no history) with a filter: popular matching items, most popular first.
    out = rec(client, domain="arts", n=3, category="group2", exclude=["arts-2"])
    assert [i["item_id"] for i in out["items"]] == ["arts-5", "arts-8", "arts-11"]


class _SlowReads(MemoryStore):
    """A store whose user read blocks (a slow store, read through the default
    ``read_user_async``: on a worker thread)."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def read_user(self, user_id: str, domains: Sequence[str]) -> UserRead:
        self.release.wait(10)
        return super().read_user(user_id, domains)


def test_a_slow_store_read_does_not_stall_other_requests(
    make_settings: Callable[..., Settings], engine_factory: FakeEngineFactory
) -> None:
    """Recommends run on the event loop: a blocking store must stay off it."""
    store = _SlowReads()
    with running(make_settings(), engine_factory, store) as client:
        slow: list[int] = []
        t = threading.Thread(
            target=lambda: slow.append(
                client.post(
                    "/v1/recommend", json={"user_id": "u1", "domain": "arts"}, headers=AUTH
                ).status_code
            )
        )
        t.start()
        time.sleep(0.2)  # the named-user request is waiting on the store now
        r = client.post("/v1/recommend", json={"history": ["arts-1"], "domain": "arts"})
        assert r.status_code == 200 and not slow  # answered while the other one waits
        store.release.set()
        t.join(10)
        assert slow == [200]
