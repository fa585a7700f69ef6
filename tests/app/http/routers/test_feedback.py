"""POST /v1/feedback and GET /v1/recommendations/{id}: ids on recommend answers, the
records written off the request path, every 4xx, duplicates and Idempotency-Key retries,
positive events -> interactions, anonymous sessions, key rules, erasure, /v1/stats and
/metrics. Real stores (SQLite, Redis) over HTTP: tests/app/test_stores_feedback.py."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient

from app.settings import Settings
from tests.app.conftest import ADMIN, AUTH, running, service_of
from tests.app.fakes import FakeEngineFactory, MemoryStore


def served(client: TestClient, **body: Any) -> dict[str, Any]:
    """A recommend answer whose record has been written (the recorder flushed)."""
    body.setdefault("domain", "arts")
    body.setdefault("n", 3)
    headers = AUTH if "user_id" in body else {}
    r = client.post("/v1/recommend", json=body, headers=headers)
    assert r.status_code == 200, r.text
    service_of(client).recorder.flush()
    answer: dict[str, Any] = r.json()
    return answer


def send(
    client: TestClient, events: list[dict[str, Any]], headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    r = client.post("/v1/feedback", json={"events": events}, headers=headers or AUTH)
    return r.status_code, r.json()


def event(answer: dict[str, Any], rank: int, kind: str) -> dict[str, Any]:
    item = answer["items"][rank - 1]["item_id"]
    return {"recommendation_id": answer["recommendation_id"], "item_id": item, "event": kind}


def test_answers_carry_an_unguessable_id_and_their_list_is_recorded(
    client: TestClient, memory_store: MemoryStore
) -> None:
    a, b = served(client, user_id="u1"), served(client, user_id="u1")
    assert re.fullmatch(r"[0-9a-f]{32}", a["recommendation_id"])
    assert a["recommendation_id"] != b["recommendation_id"]
    r = client.get(f"/v1/recommendations/{a['recommendation_id']}", headers=AUTH)
    assert r.status_code == 200
    got = r.json()
    assert (got["user_id"], got["session_id"], got["domain"]) == ("u1", None, "arts")
    assert got["model_version"] == a["model_version"]
    assert [(i["rank"], i["item_id"], i["source"]) for i in got["items"]] == [
        (k + 1, i["item_id"], i["source"]) for k, i in enumerate(a["items"])
    ]
    assert got["feedback"] == []


def test_feedback_counts_once_and_positive_events_become_interactions(
    client: TestClient, memory_store: MemoryStore
) -> None:
    a = served(client, user_id="u1")
    events = [event(a, 1, "impression"), event(a, 2, "impression"), event(a, 2, "click")]
    events.append(event(a, 2, "purchase"))
    assert send(client, events) == (200, {"accepted": 4, "duplicates": 0, "interactions": 2})
    clicked = a["items"][1]["item_id"]
    assert memory_store.get_history("u1") == {"arts": [clicked, clicked]}
    # re-sent without a key: counted once, no second interaction
    assert send(client, events) == (200, {"accepted": 0, "duplicates": 4, "interactions": 0})
    assert memory_store.get_history("u1") == {"arts": [clicked, clicked]}
    got = client.get(f"/v1/recommendations/{a['recommendation_id']}", headers=AUTH).json()
    assert got["feedback"] == [
        {"rank": 1, "event": "impression"},
        {"rank": 2, "event": "click"},
        {"rank": 2, "event": "impression"},
        {"rank": 2, "event": "purchase"},
    ]
    online = client.get("/v1/stats", headers=AUTH).json()["online"]
    assert len(online) == 1
    m = online[0]
    assert (m["model_version"], m["domain"]) == (a["model_version"], "arts")
    assert (m["recommendations"], m["observed"], m["impressions"], m["clicks"]) == (1, 1, 2, 1)
    assert (m["ctr"], m["hit_rate"], m["mrr"]) == (0.5, 1.0, 0.5)
    assert m["positives"] == {"click": 1, "purchase": 1}
    assert m["hourly"][0]["recommendations"] == 1 and m["hourly"][0]["clicks"] == 1
    text = client.get("/metrics").text
    version = a["model_version"]
    line = f'micrec_feedback_events_total{{domain="arts",event="click",version="{version}"}} 1.0'
    assert line in text
    assert f'micrec_recommendation_records_total{{domain="arts",version="{version}"}}' in text


def test_an_idempotency_key_replays_the_first_answer(
    client: TestClient, memory_store: MemoryStore
) -> None:
    a = served(client, user_id="u1")
    keyed = {**AUTH, "Idempotency-Key": "fb-1"}
    events = [event(a, 1, "click")]
    first = client.post("/v1/feedback", json={"events": events}, headers=keyed)
    again = client.post("/v1/feedback", json={"events": events}, headers=keyed)
    assert first.status_code == again.status_code == 200
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert again.json() == first.json() == {"accepted": 1, "duplicates": 0, "interactions": 1}
    assert memory_store.get_history("u1") == {"arts": [a["items"][0]["item_id"]]}


def test_every_bad_batch_is_refused_whole_with_a_clear_message(
    client: TestClient, memory_store: MemoryStore
) -> None:
    a = served(client, user_id="u1")
    good = event(a, 1, "click")
    other = {"recommendation_id": "0" * 32, "item_id": "arts-1", "event": "click"}
    status, body = send(client, [good, other])
    assert status == 404 and "events[1].recommendation_id" in body["detail"]
    assert "unknown or expired" in body["detail"]

    shown = {it["item_id"] for it in a["items"]}
    unseen = next(f"arts-{k}" for k in range(1, 50) if f"arts-{k}" not in shown)
    status, body = send(client, [good, {**good, "item_id": unseen}])
    assert status == 422 and body["detail"] == (
        f"events[1].item_id '{unseen}' was not in recommendation '{a['recommendation_id']}'"
    )
    status, body = send(client, [{**good, "event": "like"}])
    assert status == 422
    assert body["detail"] == (
        "events[0].event 'like' is not a feedback event type; "
        "allowed: impression, click, add-to-cart, purchase"
    )
    status, body = send(client, [{**good, "timestamp": 1e308}])
    assert status == 422 and "events[0].timestamp is out of range" in body["detail"]
    assert "1e+308" not in body["detail"]
    status, body = send(client, [{**good, "extra": 1}])
    assert status == 422
    assert client.post("/v1/feedback", json={"events": [good]}).status_code == 401
    assert send(client, [good] * 1001)[0] in (413, 422)
    # nothing of any refused batch was written
    assert memory_store.get_history("u1") == {}
    m = client.get("/v1/stats", headers=AUTH).json()["online"][0]
    assert (m["observed"], m["clicks"], m["events"]) == (0, 0, {})


def test_the_batch_limit_is_max_batch(
    make_settings: Callable[..., Settings], engine_factory: FakeEngineFactory
) -> None:
    with running(make_settings(max_batch=2), engine_factory, MemoryStore()) as c:
        a = served(c)
        status, body = send(c, [event(a, 1, "impression")] * 3)
        assert status == 413 and "max_batch=2" in body["detail"]


def test_anonymous_sessions_count_in_the_metrics_but_write_no_history(
    client: TestClient, memory_store: MemoryStore
) -> None:
    a = served(client, history=["arts-1"], session_id="s-42")
    got = client.get(f"/v1/recommendations/{a['recommendation_id']}", headers=AUTH).json()
    assert (got["user_id"], got["session_id"]) == (None, "s-42")
    assert send(client, [event(a, 1, "click")]) == (
        200,
        {"accepted": 1, "duplicates": 0, "interactions": 0},
    )
    assert memory_store.interaction_count() == 0
    assert client.get("/v1/stats", headers=AUTH).json()["online"][0]["clicks"] == 1


def test_records_are_read_with_a_key_only_and_gone_after_the_users_erasure(
    client: TestClient, memory_store: MemoryStore
) -> None:
    a = served(client, user_id="u1")
    path = f"/v1/recommendations/{a['recommendation_id']}"
    assert client.get(path).status_code == 401
    assert client.get(path, headers=AUTH).status_code == 200
    assert client.get("/v1/recommendations/" + "0" * 32, headers=AUTH).status_code == 404
    assert client.delete("/v1/users/u1", headers=ADMIN).status_code == 204
    assert client.get(path, headers=AUTH).status_code == 404
    assert send(client, [event(a, 1, "click")])[0] == 404


def test_recording_off_gives_no_id_and_a_full_queue_drops_and_counts(
    make_settings: Callable[..., Settings], engine_factory: FakeEngineFactory
) -> None:
    with running(make_settings(record_recommendations=False), engine_factory, MemoryStore()) as c:
        r = c.post("/v1/recommend", json={"domain": "arts", "n": 2})
        assert r.json()["recommendation_id"] is None
    settings = make_settings(record_queue=1, record_flush_s=60)
    with running(settings, engine_factory, MemoryStore()) as c:
        kept, dropped = (
            c.post("/v1/recommend", json={"domain": "arts", "n": 2}).json() for _ in range(2)
        )
        assert dropped["recommendation_id"] is not None
        service_of(c).recorder.flush()
        assert send(c, [event(kept, 1, "click")])[0] == 200
        assert send(c, [event(dropped, 1, "click")])[0] == 404
        text = c.get("/metrics").text
        assert 'micrec_recommendation_records_dropped_total{reason="queue_full"} 1.0' in text
