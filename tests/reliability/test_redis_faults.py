"""Redis faults under load: reads keep being answered, writes get 503 + Retry-After while
Redis is down, ``/readyz`` says so, and the service recovers by itself (same process).

A real uvicorn process (FakeEngine app) on a private redis-server. Reader threads
(recommend for users with stored history, item lookups, similar items) and writer threads
(item registrations, interaction batches) run throughout; redis-server is stopped and
started again under them. Outcomes are classified by when the request ran:

* reads, always: 200 (from in-process state; a user's stored history is reported as
  ``unavailable`` while Redis is down);
* writes sent and answered entirely inside the outage: 503 with ``Retry-After`` and a
  message (never a 500, never a hang);
* writes sent after ``/readyz`` reported ``ready`` again: 2xx; the process is the same
  one (no restart); every write acknowledged at any time is in Redis afterwards.

``test_redis_stop_start_under_load`` (CI): one graceful stop/start.
``test_redis_crashes_under_load`` (slow): three outages, SIGKILL and SIGTERM alternating.
tests/app/test_stores.py::test_redis_outage covers the single-request version in-process.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import pytest

from app.store.redis import RedisStore
from bench.redis_server import RedisServer
from tests.reliability.procs import AUTH, ServiceProcess, record, wait_for
from tests.reliability.traffic import Outcome, Traffic, by_status

RETRY_AFTER = "2"  # MICREC_STORE_RETRY_AFTER_S in tests/reliability/conftest.py
USERS = [f"fu{k}" for k in range(5)]
SEEDED = [f"seed-{k}" for k in range(5)]


def _seed(http: httpx.Client) -> None:
    for k, item in enumerate(SEEDED):
        r = http.post(
            "/v1/items",
            json={"item_id": item, "domain": "arts", "title": f"seed {k}"},
            headers=AUTH,
        )
        assert r.status_code == 201, r.text
    rows = [{"user_id": u, "item_id": f"arts-{k}"} for k, u in enumerate(USERS)]
    r = http.post("/v1/interactions", json={"interactions": rows}, headers=AUTH)
    assert r.status_code == 200 and r.json()["accepted"] == len(rows), r.text


def _recommend(http: httpx.Client, k: int) -> httpx.Response:
    body = {"user_id": USERS[k % len(USERS)], "domain": "arts", "n": 5}
    return http.post("/v1/recommend", json=body, headers=AUTH)


def _get_item(http: httpx.Client, k: int) -> httpx.Response:
    return http.get(f"/v1/items/{SEEDED[k % len(SEEDED)]}", headers=AUTH)


def _similar(http: httpx.Client, k: int) -> httpx.Response:
    return http.get(f"/v1/items/{SEEDED[k % len(SEEDED)]}/similar?n=5", headers=AUTH)


def _register(worker: int) -> Callable[[httpx.Client, int], httpx.Response]:
    def send(http: httpx.Client, k: int) -> httpx.Response:
        item = f"w{worker}-{k}"
        body = {"item_id": item, "domain": "office", "title": f"fault item {item}"}
        return http.post("/v1/items", json=body, headers=AUTH)

    return send


def _interact(http: httpx.Client, k: int) -> httpx.Response:
    rows = [{"user_id": USERS[k % len(USERS)], "item_id": f"arts-{k % 30}"}]
    return http.post("/v1/interactions", json={"interactions": rows}, headers=AUTH)


def _traffic(url: str) -> Traffic:
    return Traffic(
        url,
        [
            ("read", "recommend", _recommend),
            ("read", "get_item", _get_item),
            ("read", "similar", _similar),
            ("write", "register", _register(0)),
            ("write", "interactions", _interact),
        ],
        pause_s=0.01,
    )


def _readyz(url: str) -> dict:
    r = httpx.get(url + "/readyz", timeout=5)
    assert r.status_code == 200, r.text  # a model serves: ready or degraded, never 503
    body: dict = r.json()
    return body


def _outage(
    svc: ServiceProcess, redis_server: RedisServer, *, hard: bool, down_s: float
) -> tuple[float, float, float, dict]:
    """Stop Redis for ``down_s`` under the running load; returns (down_at, up_at,
    ready_at, readyz body seen during the outage)."""
    redis_server.stop(hard=hard)
    down_at = time.monotonic()
    # readiness notices at once (it pings the store itself)
    during = _readyz(svc.url)
    time.sleep(down_s)
    up_at = time.monotonic()
    redis_server.start()
    assert wait_for(lambda: _readyz(svc.url)["status"] == "ready", 30), _readyz(svc.url)
    ready_at = time.monotonic()
    return down_at, up_at, ready_at, during


def _check(outcomes: list[Outcome], windows: list[tuple[float, float, float]]) -> dict[str, object]:
    """Assert the rules of the module docstring; return the figures."""
    bad_reads = [o for o in outcomes if o.kind == "read" and o.status != 200]
    assert not bad_reads, bad_reads[:10]

    inside = [
        o
        for o in outcomes
        if o.kind == "write" and any(d <= o.started and o.ended <= u for d, u, _ in windows)
    ]
    assert inside, "no write ran inside an outage"
    wrong = [o for o in inside if o.status != 503 or o.retry_after != RETRY_AFTER]
    assert not wrong, wrong[:10]
    assert all("state store unavailable" in o.error for o in inside), inside[:3]

    after_ready = [o for o in outcomes if o.kind == "write" and o.started >= windows[-1][2]]
    assert after_ready, "no write after recovery"
    failed_after = [o for o in after_ready if o.status // 100 != 2]
    assert not failed_after, failed_after[:10]

    reads_in_outage = [
        o
        for o in outcomes
        if o.kind == "read" and any(d <= o.started and o.ended <= u for d, u, _ in windows)
    ]
    assert reads_in_outage, "no read ran inside an outage"
    return {
        "requests": len(outcomes),
        "by_status": by_status(outcomes),
        "reads_during_outage_answered_200": len(reads_in_outage),
        "writes_during_outage_503_retry_after": len(inside),
        "recovery_s_after_redis_back": [round(r - u, 3) for _, u, r in windows],
        "outage_s": [round(u - d, 3) for d, u, _ in windows],
    }


def _acked_items_present(outcomes: list[Outcome], redis_url: str, workers: int = 1) -> int:
    """Every acknowledged registration is in Redis; returns how many were checked."""
    store = RedisStore(redis_url)
    try:
        ids = {i.item_id for i in store.list_items()}
    finally:
        store.close()
    # registration k of worker 0 is item "w0-k": k = its index among that worker's requests
    registers = [o for o in outcomes if o.name == "register"]
    acked = {f"w0-{k}" for k, o in enumerate(registers) if o.status == 201}
    missing = acked - ids
    assert not missing, sorted(missing)[:20]
    return len(acked)


def _run(
    redis_server: RedisServer,
    make_service: Callable[..., ServiceProcess],
    outages: list[bool],
    down_s: float,
) -> dict[str, object]:
    svc = make_service(
        redis_server.url, name="faults", replica_sync_interval_s="0.2", popularity_refresh_s="0.5"
    )
    svc.start()
    pid = svc.pid
    with httpx.Client(base_url=svc.url, timeout=10) as http:
        _seed(http)
    traffic = _traffic(svc.url).start()
    windows = []
    degraded_seen = []
    try:
        assert wait_for(lambda: traffic.count() >= 50, 30)  # load is flowing
        for hard in outages:
            down_at, up_at, ready_at, during = _outage(svc, redis_server, hard=hard, down_s=down_s)
            assert during["status"] == "degraded", during
            assert during["store"]["ok"] is False, during
            assert any("writes fail with 503" in d for d in during["degraded"]), during
            degraded_seen.append(during["degraded"][0][:120])
            windows.append((down_at, up_at, ready_at))
            n = traffic.count()
            assert wait_for(lambda n=n: traffic.count() >= n + 50, 30)  # load after recovery
    finally:
        outcomes = traffic.stop()
    assert svc.running and svc.pid == pid, "the service was restarted"
    figures = _check(outcomes, windows)
    figures["acknowledged_registrations_found"] = _acked_items_present(outcomes, redis_server.url)
    figures["readyz_during_outage"] = degraded_seen[0]
    figures["faults"] = {
        "redis_sigterm": sum(not h for h in outages),
        "redis_sigkill": sum(outages),
    }
    return figures


def test_redis_stop_start_under_load(
    redis_server: RedisServer, make_service: Callable[..., ServiceProcess]
) -> None:
    figures = _run(redis_server, make_service, outages=[False], down_s=1.5)
    record("redis-faults", **figures)


@pytest.mark.slow
def test_redis_crashes_under_load(
    redis_server: RedisServer, make_service: Callable[..., ServiceProcess]
) -> None:
    figures = _run(redis_server, make_service, outages=[True, False, True], down_s=5.0)
    record("redis-faults-repeated", **figures)
