"""Two service processes (separate ports) sharing one Redis behave as one service.

Replica A and replica B are real uvicorn processes (FakeEngine app) with the documented
default ``MICREC_REPLICA_SYNC_INTERVAL_S`` (0.2 s). Alternating the direction (A->B, B->A):

* an item registered through one replica appears among the other's model-ranked
  recommendations; deleted through one, it disappears from the other's (and its GET
  turns 404 there);
* interactions posted to one replica change the other's recommendations for that user
  (from "no history, fallback" to an inductive embedding of exactly those rows, which are
  then excluded as seen).

Each propagation is measured from the writing replica's 2xx answer to the first answer of
the other replica that reflects it (polled every 10 ms). The figures (max, median, how
many within 1 s) are recorded, not asserted: the poll timeout (10 s) only bounds a
failure, so a loaded CI machine cannot make the test flaky.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable

import httpx
import pytest

from bench.redis_server import RedisServer
from tests.reliability.conftest import MAX_N
from tests.reliability.procs import AUTH, ServiceProcess, record

BOUND_S = 60.0  # a hang guard that ends a failing test, not a speed target (bench/ measures speed)
SYNC_INTERVAL_S = 0.2  # the default MICREC_REPLICA_SYNC_INTERVAL_S (not overridden here)


def _ranked(http: httpx.Client, domain: str) -> list[str]:
    """Every model-ranked item of ``domain`` (whole index) on this replica."""
    r = http.post(
        "/v1/recommend",
        json={"history": [f"{domain}-1"], "domain": domain, "exclude_seen": False, "n": MAX_N},
        headers=AUTH,
    )
    assert r.status_code == 200, r.text
    return [i["item_id"] for i in r.json()["items"] if i["source"] == "model"]


def _user_recs(http: httpx.Client, user: str, domain: str) -> dict:
    r = http.post("/v1/recommend", json={"user_id": user, "domain": domain, "n": 10}, headers=AUTH)
    assert r.status_code == 200, r.text
    body: dict = r.json()
    return body


def _until(predicate: Callable[[], bool], since: float) -> float:
    """Seconds from ``since`` until ``predicate`` holds (asserted within BOUND_S)."""
    while not predicate():
        assert time.monotonic() - since < BOUND_S, "not propagated"
        time.sleep(0.01)
    return time.monotonic() - since


def _summary(times: list[float]) -> dict[str, object]:
    return {
        "n": len(times),
        "max_s": round(max(times), 3),
        "median_s": round(statistics.median(times), 3),
        "within_1s": sum(t <= 1.0 for t in times),
    }


class Jitter:
    """A random pause (0 to one sync interval) before each write, so writes do not land
    phase-locked to the other replica's sync tick (after detecting one change, the next
    write would otherwise always wait almost a full interval)."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def wait(self) -> None:
        time.sleep(self.rng.uniform(0, SYNC_INTERVAL_S))


def _round(
    k: int, src: httpx.Client, dst: httpx.Client, times: dict[str, list[float]], jitter: Jitter
) -> None:
    """One round: register, delete and interact through ``src``, observed on ``dst``."""
    domain = ("arts", "office")[k % 2]
    item = f"rep-{k}"
    assert item not in _ranked(dst, domain)

    # registration through src -> served by dst's model
    jitter.wait()
    r = src.post(
        "/v1/items",
        json={"item_id": item, "domain": domain, "title": f"replicated {k}"},
        headers=AUTH,
    )
    assert r.status_code == 201, r.text
    t0 = time.monotonic()
    times["register"].append(_until(lambda: item in _ranked(dst, domain), t0))
    assert dst.get(f"/v1/items/{item}", headers=AUTH).json()["title"] == f"replicated {k}"
    # the other replica refuses a duplicate registration
    dup = dst.post("/v1/items", json={"item_id": item, "domain": domain}, headers=AUTH)
    assert dup.status_code == 409, dup.text

    # deletion through src -> gone from dst's recommendations
    jitter.wait()
    assert src.delete(f"/v1/items/{item}", headers=AUTH).status_code == 204
    t0 = time.monotonic()
    times["delete"].append(_until(lambda: item not in _ranked(dst, domain), t0))
    assert dst.get(f"/v1/items/{item}", headers=AUTH).status_code == 404

    # interactions posted to src -> dst's recommendations for that user change
    user = f"rep-user-{k}"
    before = _user_recs(dst, user, domain)
    assert before["user_embedding"] == "fallback", before
    seen = [f"{domain}-{(k + 3) % 30}", f"{domain}-{(k + 9) % 30}"]  # both domains have >= 30
    rows = [{"user_id": user, "item_id": i} for i in seen]
    r = src.post("/v1/interactions", json={"interactions": rows}, headers=AUTH)
    assert r.status_code == 200 and r.json()["accepted"] == 2, r.text
    t0 = time.monotonic()
    times["interactions"].append(
        _until(lambda: _user_recs(dst, user, domain)["user_embedding"] != "fallback", t0)
    )
    after = _user_recs(dst, user, domain)
    assert after["user_embedding"] == "inductive", after
    assert after["history"]["stored"] == "ok" and after["history"]["items_used"] == 2
    got = [i["item_id"] for i in after["items"]]
    assert not set(seen) & set(got), got  # seen on the other replica: excluded here
    assert got != [i["item_id"] for i in before["items"]]


def _run(
    redis_server: RedisServer, make_service: Callable[..., ServiceProcess], rounds: int
) -> dict[str, object]:
    a = make_service(redis_server.url, name="replica-a")
    b = make_service(redis_server.url, name="replica-b")
    for svc in (a, b):  # start both, then wait: the imports overlap
        svc.start(wait_ready=False)
    for svc in (a, b):
        svc.wait_ready()
    assert a.port != b.port
    times: dict[str, list[float]] = {"register": [], "delete": [], "interactions": []}
    jitter = Jitter(rounds)
    with (
        httpx.Client(base_url=a.url, timeout=10) as ha,
        httpx.Client(base_url=b.url, timeout=10) as hb,
    ):
        for k in range(rounds):
            src, dst = (ha, hb) if k % 2 == 0 else (hb, ha)
            _round(k, src, dst, times, jitter)
    return {
        "replicas": 2,
        "rounds": rounds,
        "sync_interval_s": SYNC_INTERVAL_S,
        **{f"{kind}_propagation": _summary(ts) for kind, ts in times.items()},
        "register_times_s": [round(t, 3) for t in times["register"]],
        "delete_times_s": [round(t, 3) for t in times["delete"]],
    }


def test_two_replicas_share_one_redis(
    redis_server: RedisServer, make_service: Callable[..., ServiceProcess]
) -> None:
    record("replicas", **_run(redis_server, make_service, rounds=2))


@pytest.mark.slow
def test_two_replicas_many_rounds(
    redis_server: RedisServer, make_service: Callable[..., ServiceProcess]
) -> None:
    record("replicas-many", **_run(redis_server, make_service, rounds=40))
