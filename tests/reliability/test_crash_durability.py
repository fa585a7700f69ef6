"""Crash durability: ``kill -9`` the service mid-burst, restart it, lose nothing acknowledged.

A real uvicorn process (FakeEngine app, tests/reliability/fake_app.py) on the Redis store
(a private redis-server with ``appendonly yes`` + ``appendfsync always``, as documented
for deployments). Several client threads each loop "register an item, then post a batch
of interactions for a fresh user naming that item and a bundle item"; the service is
SIGKILLed while they run, then started again on the same port. Checked after the restart:

* every write answered 2xx is present: the item (GET 200, same title, served by the model
  for a user whose history is that item) and the whole interaction batch (the user's
  stored history and the recommendation's ``history.items_used``);
* nothing is half-present: a write whose answer was lost in the crash (in doubt) is either
  wholly there or wholly absent (a batch's rows all or none; an item with its content and
  in the index, or not at all), and the store's item set matches the items' hashes.

``test_kill_9_mid_burst`` (CI): one crash of the service. ``test_kill_9_service_and_redis``
(slow): three rounds, each SIGKILLing the service *and* redis-server together, so the
acknowledged writes must also survive a crash of Redis itself (AOF replay).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import httpx
import pytest

from app.store.redis import RedisStore
from bench.redis_server import RedisServer
from tests.reliability.conftest import MAX_N
from tests.reliability.procs import AUTH, ServiceProcess, record, wait_for

DOMAINS = ("arts", "office")
CLIENTS = 4

Outcome = Literal["ack", "failed", "in_doubt"]


@dataclass
class Write:
    kind: Literal["item", "interactions"]
    key: str  # item id, or user id of the batch
    domain: str
    payload: dict
    outcome: Outcome = "in_doubt"


@dataclass
class Burst:
    """Client threads writing until ``stop``; every write and its outcome is kept."""

    url: str
    round_id: int
    writes: list[Write] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def acked(self) -> int:
        with self.lock:
            return sum(w.outcome == "ack" for w in self.writes)

    def _send(self, http: httpx.Client, w: Write) -> bool:
        """Send one write; False once the service is gone (this client then stops)."""
        with self.lock:
            self.writes.append(w)
        path = "/v1/items" if w.kind == "item" else "/v1/interactions"
        try:
            r = http.post(path, json=w.payload, headers=AUTH)
        except httpx.TransportError:
            # Reset, refused or timed out with the crash: it may or may not have been
            # applied. The check accepts an in-doubt write only wholly present or absent.
            w.outcome = "in_doubt"
            return False
        w.outcome = "ack" if r.status_code // 100 == 2 else "failed"
        return True

    def client(self, c: int) -> None:
        with httpx.Client(base_url=self.url, timeout=10) as http:
            k = 0
            while not self.stop.is_set():
                domain = DOMAINS[k % 2]
                item = f"r{self.round_id}-c{c}-i{k}"
                body = {"item_id": item, "domain": domain, "title": f"durable {item}"}
                if not self._send(http, Write("item", item, domain, body)):
                    return
                user = f"r{self.round_id}-c{c}-u{k}"
                rows = [
                    {"user_id": user, "item_id": item},
                    {"user_id": user, "item_id": f"{domain}-{k % 20}"},
                    {"user_id": user, "item_id": f"{domain}-{(k + 7) % 20}"},
                ]
                if not self._send(
                    http, Write("interactions", user, domain, {"interactions": rows})
                ):
                    return
                k += 1


def _burst_and_kill(
    svc: ServiceProcess, round_id: int, kill: Callable[[], None], acks_before_kill: int
) -> Burst:
    burst = Burst(svc.url, round_id)
    threads = [threading.Thread(target=burst.client, args=(c,)) for c in range(CLIENTS)]
    for t in threads:
        t.start()
    try:
        # The timeout only bounds a failure (service not accepting writes at all).
        assert wait_for(lambda: burst.acked() >= acks_before_kill, 60), svc.log_tail()
        kill()  # mid-burst: the clients are still sending
    finally:
        burst.stop.set()
        for t in threads:
            t.join(30)
    assert not any(t.is_alive() for t in threads)
    return burst


def _item_state(http: httpx.Client, store: RedisStore, w: Write) -> str:
    """ "present" (stored with content, GET 200, served by the model), "absent", or a
    description of how it is half-present."""
    stored = store.get_item(w.key)
    r = http.get(f"/v1/items/{w.key}", headers=AUTH)
    if stored is None and r.status_code == 404:
        return "absent"
    problems = []
    if stored is None:
        problems.append("not in the store")
    elif stored.title != w.payload["title"] or "text" not in stored.content:
        problems.append(f"stored incompletely ({stored.title!r}, {sorted(stored.content)})")
    if r.status_code != 200 or r.json().get("title") != w.payload["title"]:
        problems.append(f"GET {r.status_code}")
    rec = http.post(
        "/v1/recommend",
        json={"history": [w.key], "domain": w.domain, "exclude_seen": False, "n": MAX_N},
        headers=AUTH,
    )
    if rec.status_code != 200 or not any(
        i["item_id"] == w.key and i["source"] == "model" for i in rec.json()["items"]
    ):
        problems.append("not recommendable")
    return "present" if not problems else "; ".join(problems)


def _batch_state(http: httpx.Client, store: RedisStore, w: Write) -> str:
    expected = [row["item_id"] for row in w.payload["interactions"]]
    history = store.get_history(w.key)
    if not history:
        return "absent"
    got = history.get(w.domain, [])
    if got != expected or set(history) != {w.domain}:
        return f"half-present: stored {history}, sent {expected}"
    rec = http.post("/v1/recommend", json={"user_id": w.key, "domain": w.domain}, headers=AUTH)
    used = rec.json()["history"]["items_used"] if rec.status_code == 200 else None
    if used != len(expected):
        return f"stored but the service uses {used} of {len(expected)} rows"
    return "present"


def _verify(svc: ServiceProcess, redis_url: str, bursts: list[Burst]) -> dict[str, int]:
    store = RedisStore(redis_url)
    counts = {
        "sent": 0,
        "acknowledged": 0,
        "acknowledged_found": 0,
        "failed_4xx_5xx": 0,
        "in_doubt": 0,
        "in_doubt_present": 0,
        "in_doubt_absent": 0,
    }
    lost: list[str] = []
    half: list[str] = []
    try:
        with httpx.Client(base_url=svc.url, timeout=10) as http:
            for burst in bursts:
                for w in burst.writes:
                    counts["sent"] += 1
                    check = _item_state if w.kind == "item" else _batch_state
                    state = check(http, store, w)
                    if state not in ("present", "absent"):
                        half.append(f"{w.kind} {w.key} ({w.outcome}): {state}")
                    if w.outcome == "ack":
                        counts["acknowledged"] += 1
                        if state == "present":
                            counts["acknowledged_found"] += 1
                        elif state == "absent":
                            lost.append(f"{w.kind} {w.key}")
                    elif w.outcome == "in_doubt":
                        counts["in_doubt"] += 1
                        if state in ("present", "absent"):
                            counts[f"in_doubt_{state}"] += 1
                    else:
                        counts["failed_4xx_5xx"] += 1
            # the store's item set and the item hashes agree (no orphan either way)
            ids = {i.item_id for i in store.list_items()}
            members = {m.decode() for m in store._r.smembers(store.keys.items)}
            assert ids == members, members ^ ids
            served = http.get("/v1/model", headers=AUTH).json()["registered_items"]
            assert served == len(ids), (served, len(ids))
    finally:
        store.close()
    assert not lost, f"acknowledged writes lost: {lost[:20]} (of {len(lost)})"
    assert not half, f"half-present writes: {half[:20]} (of {len(half)})"
    assert counts["failed_4xx_5xx"] == 0, counts  # only the crash may fail a write
    return counts


def test_kill_9_mid_burst(
    redis_server: RedisServer, make_service: Callable[..., ServiceProcess]
) -> None:
    svc = make_service(redis_server.url, name="durable")
    svc.start()
    burst = _burst_and_kill(svc, 0, svc.kill, acks_before_kill=60)
    svc.start()  # same port, same store
    counts = _verify(svc, redis_server.url, [burst])
    assert counts["acknowledged"] >= 60
    record("crash-durability", faults={"service_sigkill": 1}, clients=CLIENTS, **counts)


@pytest.mark.slow
def test_kill_9_service_and_redis(
    redis_server: RedisServer, make_service: Callable[..., ServiceProcess]
) -> None:
    svc = make_service(redis_server.url, name="durable-both")
    svc.start()
    bursts = []
    rounds = 3

    for round_id in range(rounds):

        def crash_both() -> None:
            svc.kill()
            redis_server.stop(hard=True)

        bursts.append(_burst_and_kill(svc, round_id, crash_both, acks_before_kill=150))
        redis_server.start()  # replays the AOF
        svc.start()
    counts = _verify(svc, redis_server.url, bursts)
    record(
        "crash-durability-with-redis",
        faults={"service_sigkill": rounds, "redis_sigkill": rounds},
        clients=CLIENTS,
        **counts,
    )
