"""Canary promotion with a real service (issue 26, deliverable 5): two uvicorn replicas on
one real Redis, serving one registry, and a simulated population whose clicks follow a
known preference (bench/canary_sim.py drives it).

* CI variant (fake engines in real processes, small): the population likes what version
  fake-v2 ranks first for its history. Canary v0002 (fake-v2) against v0001 is promoted by
  the rule; then canary v0003 (fake-v3: unrelated, "random" rankings) against v0002 is
  rolled back. No request fails during either; while a canary runs, every user (by id, or
  by session id for anonymous requests) gets one version on both replicas.
* Slow variant: the same on real tiny bundles trained for it (bench/canary_sim_real.py):
  a candidate that learned the population's pattern, one trained on random items.

Figures are printed as ``RELIABILITY`` lines (docs/results/online.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from bench.canary_sim import Population, Simulator, events_at_decision
from bench.redis_server import RedisServer
from tests.app.fakes import FakeEngine, FakeEngineFactory
from tests.app.registry_fakes import make_registry
from tests.reliability.procs import ADMIN, AUTH, FAKE_APP, REPO, ServiceProcess, record

MIN_EVENTS = 600  # impressions per arm (ctr)
USERS = 40


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[list[ServiceProcess]]:
    factory = FakeEngineFactory()
    registry = make_registry(tmp_path, factory)  # v0001 current; v0002, v0003
    with RedisServer(tmp_path / "redis") as redis:
        env = {
            "MICREC_REGISTRY_DIR": str(registry.root),
            "MICREC_STORE_URL": redis.url,
            "MICREC_REGISTRY_POLL_S": "0.1",
            "MICREC_CANARY_CHECK_S": "0.1",
            "MICREC_CANARY_MIN_EVENTS": str(MIN_EVENTS),
            "MICREC_CANARY_METRIC": "ctr",
            "MICREC_RECORD_FLUSH_S": "0.05",
            "MICREC_REPLICA_SYNC_INTERVAL_S": "0.2",
        }
        procs = [ServiceProcess(env, app=FAKE_APP, log_path=tmp_path / f"r{k}.log") for k in (0, 1)]
        try:
            for p in procs:
                p.start()
            yield procs
        finally:
            for p in procs:
                p.stop()


def fake_preference(users: int, seed: int = 0) -> tuple[dict[str, list[str]], dict[str, set[str]]]:
    """Histories (3 arts items) and what each user likes: the 10 items fake-v2 ranks first
    for that history (the known preference)."""
    engine = FakeEngine({"model_version": "fake-v2", "domains": {"arts": 60, "office": 40}})
    cat = engine.catalogue("arts")
    rng = np.random.default_rng(seed)
    histories, liked = {}, {}
    for k in range(users):
        user = f"sim-{k:03d}"
        hist = [str(i) for i in rng.choice(cat.item_ids, 3, replace=False)]
        scores = cat.vectors @ engine.embed_user("arts", {"arts": hist}).vector
        ranked = [cat.item_ids[j] for j in np.argsort(-scores) if cat.item_ids[j] not in hist]
        histories[user], liked[user] = hist, set(ranked[:10])
    return histories, liked


def test_better_canary_promoted_random_one_rolled_back_no_request_fails(
    replicas: list[ServiceProcess],
) -> None:
    clients = [httpx.Client(base_url=p.url, headers=AUTH, timeout=30) for p in replicas]
    admin = httpx.Client(base_url=replicas[0].url, headers=ADMIN, timeout=30)
    histories, liked = fake_preference(USERS)
    rows = [{"user_id": u, "item_id": i} for u, h in histories.items() for i in h]
    assert clients[1].post("/v1/interactions", json={"interactions": rows}).status_code == 200
    pop = Population("arts", liked, p_liked=0.5, p_other=0.02, anonymous_share=0.2)
    sim = Simulator(clients, admin, pop, n=10, seed=1, feedback_delay_s=0.15)

    better = sim.run_canary("v0002", "50%", max_requests=40 * MIN_EVENTS, after=60)
    worse = sim.run_canary("v0003", "50%", max_requests=40 * MIN_EVENTS, after=60)
    figures: dict[str, Any] = {}
    for name, run in (("better", better), ("random", worse)):
        figures[name] = run.to_json() | {"events_at_decision": events_at_decision(run.decision)}
    record("canary_sim_fake", min_events=MIN_EVENTS, **figures)

    assert better.outcome == "promoted", figures
    assert worse.outcome == "rolled back", figures
    for name, run in (("better", better), ("random", worse)):
        assert run.failures == [], (name, run.failures[:5])
        assert run.flipped() == [], (name, run.flipped()[:5])
        assert figures[name]["users_seen_on_both_replicas"] >= USERS // 2  # the check bites
        n = events_at_decision(run.decision)
        # decided as soon as an arm reached the minimum, at the next check (every 0.1 s)
        assert n is not None and MIN_EVENTS <= n < 2 * MIN_EVENTS, (name, run.decision)
    assert len(figures["better"]["ctr_by_version"]) == len(figures["random"]["ctr_by_version"]) == 2
    status = admin.get("/v1/admin/bundles").json()
    assert status["current"] == "v0002"
    assert {v["version"]: v["status"] for v in status["versions"]}["v0003"] == "refused"
    for c in clients:  # both replicas serve v0002 to everybody, the canary is gone
        ready = c.get("/readyz").json()["bundle"]
        assert ready["serving"] == "v0002" and ready["canary"] is None


@pytest.mark.slow
def test_on_real_bundles_the_pattern_is_promoted_random_items_rolled_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """bench/canary_sim_real.py small: three tiny bundles trained here, real micrec serve."""
    monkeypatch.syspath_prepend(str(REPO / "bench"))  # its imports are bench's own (bare)
    from canary_sim_real import run_real

    result = run_real(users=120, min_events=800, share="50%", epochs=15)
    record("canary_sim_real", **result)
    assert result["better"]["outcome"] == "promoted", result
    assert result["random_items"]["outcome"] == "rolled back", result
    for name in ("better", "random_items"):
        assert result[name]["failures"] == 0 and result[name]["users_flipped"] == 0, result
