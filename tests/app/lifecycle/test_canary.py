"""Canary promotion (app/lifecycle/canary.py, canary_route.py, canary_follow.py) in process,
on registries of fake bundles: the rule on made-up numbers, the stable routing, a replica
that loads the candidate next to the current version, the automatic decision taken by
exactly one replica, promotion (the candidate's state is adopted, no reload) and rollback.
Real processes on a real Redis with a simulated population: tests/e2e/test_canary_sim.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from app.api.schemas import RecommendRequest
from app.lifecycle.canary import Arm, CanaryRule, finish_canary, parse_share, start_canary
from app.lifecycle.canary_route import canary_bucket
from app.service import RecommendationService
from model.registry import BundleRegistry, RegistryError
from tests.app.conftest import StartService, state_of
from tests.app.fakes import FakeEngineFactory, MemoryStore
from tests.app.registry_fakes import make_registry

USERS = [f"user-{k}" for k in range(400)]


@dataclass(frozen=True)
class Online:
    """Stands for app/feedback's OnlineMetrics (the fields the rule reads)."""

    impressions: int
    clicks: int
    observed: int
    hits: int
    mrr: float


def test_the_rule_waits_for_events_then_promotes_or_rolls_back() -> None:
    rule = CanaryRule(min_events=1000, metric="ctr", tolerance=0.01)
    cur = Arm.combine("a", [Online(600, 60, 100, 40, 0.3), Online(500, 50, 90, 30, 0.2)])
    assert (cur.impressions, cur.clicks, cur.value("ctr")) == (1100, 110, 0.1)
    assert cur.value("mrr") == pytest.approx((0.3 * 100 + 0.2 * 90) / 190)
    few = Arm("b", impressions=999, clicks=500)
    assert rule.judge(cur, few).outcome == "wait" and "999/1000" in rule.judge(cur, few).reason
    assert rule.judge(cur, Arm("b", impressions=1000, clicks=91)).outcome == "promote"
    worse = rule.judge(cur, Arm("b", impressions=1000, clicks=89))
    assert worse.outcome == "rollback" and "0.0890 vs current 0.1000" in worse.reason
    hits = CanaryRule(min_events=50, metric="hit_rate")  # counts observed recommendations
    assert hits.judge(cur, Arm("b", observed=49, hits=49)).outcome == "wait"
    assert hits.judge(cur, Arm("b", observed=50, hits=15)).outcome == "rollback"  # 0.30 < 0.37
    assert hits.judge(cur, Arm("b", observed=50, hits=20)).outcome == "promote"  # 0.40
    with pytest.raises(ValueError, match="metric"):
        CanaryRule(metric="ndcg")


def test_routing_is_stable_and_takes_the_share() -> None:
    inside = [u for u in USERS * 25 if canary_bucket(u, "salt-1") < 0.1]
    assert 0.07 < len(inside) / (25 * len(USERS)) < 0.13
    assert all(canary_bucket(u, "salt-1") == canary_bucket(u, "salt-1") for u in USERS)
    other = {u for u in USERS if canary_bucket(u, "salt-2") < 0.1}
    assert other != {u for u in USERS if canary_bucket(u, "salt-1") < 0.1}  # a new salt
    assert parse_share("10%") == parse_share("0.1") == parse_share(" 10 % ") == 0.1
    for bad in ("0", "100%", "1.5", "ten", "-5%"):
        with pytest.raises(ValueError):
            parse_share(bad)


@pytest.fixture
def registry(tmp_path: Path, engine_factory: FakeEngineFactory) -> BundleRegistry:
    return make_registry(tmp_path, engine_factory)  # v0001 current; v0002, v0003


@pytest.fixture
def replica(start: StartService, registry: BundleRegistry) -> Callable[..., RecommendationService]:
    def make(store: MemoryStore, **overrides: object) -> RecommendationService:
        overrides.setdefault("registry_poll_s", 3600)  # ticked by hand
        overrides.setdefault("canary_check_s", 0.001)
        return start(store, registry_dir=registry.root, **overrides)

    return make


def tick(svc: RecommendationService) -> None:
    """One poll; then wait for the canary's (or a main) load it started; one more poll."""
    assert svc.follower is not None
    svc.follower.tick()
    wait_canary(svc)
    svc.loader.wait(30)
    svc.follower.tick()


def wait_canary(svc: RecommendationService) -> None:
    from tests.app.fakes import wait_until

    canary = svc.follower.canary  # type: ignore[union-attr]
    assert wait_until(lambda: canary._loading is None, 30)  # type: ignore[union-attr]


def served_by(svc: RecommendationService, user: str | None) -> str:
    req = RecommendRequest(domain="arts", user_id=user, n=3)
    return svc.recommender.recommend(req).model_version


def test_a_replica_serves_the_canary_to_its_share_and_promotion_adopts_it(
    replica: Callable[..., RecommendationService],
    registry: BundleRegistry,
    engine_factory: FakeEngineFactory,
) -> None:
    store = MemoryStore()
    svc = replica(store)
    canary = start_canary(registry, store, "v0002", 0.25)
    assert registry.current() == "v0001"  # nothing switched yet
    tick(svc)
    status = svc.bundle_status()
    assert status is not None and status.canary is not None
    assert (status.canary.version, status.canary.share, status.canary.loaded) == (
        "v0002",
        0.25,
        True,
    )
    inside = {u for u in USERS if canary_bucket(u, canary.salt) < 0.25}
    for u in USERS:
        assert served_by(svc, u) == ("fake-v2" if u in inside else "fake-v1")
    assert served_by(svc, None) == "fake-v1"  # anonymous: the current version
    assert state_of(svc).model_version == "fake-v1"

    loads = engine_factory.loads
    assert finish_canary(registry, store, canary, "promote", "by test")
    assert not finish_canary(registry, store, canary, "promote", "again")  # decided once
    assert registry.current() == "v0002" and store.get_canary() is None
    tick(svc)
    assert state_of(svc).model_version == "fake-v2"  # the canary's state, adopted
    assert engine_factory.loads == loads  # without loading it again
    assert {served_by(svc, u) for u in USERS} == {"fake-v2"}
    assert svc.bundle_status().canary is None  # type: ignore[union-attr]


def test_the_rule_rolls_a_worse_canary_back_decided_by_one_replica(
    replica: Callable[..., RecommendationService], registry: BundleRegistry
) -> None:
    store = MemoryStore()
    first, second = replica(store), replica(store)
    online = {
        "fake-v1": Arm("fake-v1", impressions=2000, clicks=200),
        "fake-v3": Arm("fake-v3", impressions=2000, clicks=100),
    }
    decided: list[str] = []
    for svc in (first, second):
        canary = svc.follower.canary  # type: ignore[union-attr]
        canary.metrics_of = online.get  # type: ignore[union-attr]
        canary.rule = CanaryRule(min_events=1000, metric="ctr")  # type: ignore[union-attr]
    import app.lifecycle.canary_follow as follow_module

    real = follow_module.finish_canary

    def counted(*args: object, **kw: object) -> bool:
        won = real(*args, **kw)  # type: ignore[arg-type]
        if won:
            decided.append("won")
        return won

    follow_module.finish_canary = counted  # type: ignore[assignment]
    try:
        c = start_canary(registry, store, "v0003", 0.5)
        inside = next(u for u in USERS if canary_bucket(u, c.salt) < 0.5)
        first.follower.tick()  # type: ignore[union-attr]
        second.follower.tick()  # type: ignore[union-attr]
        wait_canary(first)
        wait_canary(second)
        # both replicas now route the same users the same way
        online["fake-v3"] = Arm("fake-v3", impressions=500, clicks=100)  # too few: waits
        first.follower.tick()  # type: ignore[union-attr]
        second.follower.tick()  # type: ignore[union-attr]
        assert served_by(first, inside) == served_by(second, inside) == "fake-v3"
        assert store.get_canary() is not None and store.get_canary().decided is None  # type: ignore[union-attr]
        online["fake-v3"] = Arm("fake-v3", impressions=1000, clicks=50)  # worse, enough
        # a replica applies the rule at most every canary_check_s (1 ms here): without the
        # pause a fast machine ticks again within it and nobody judges the new numbers
        time.sleep(0.005)
        first.follower.tick()  # type: ignore[union-attr]
        second.follower.tick()  # type: ignore[union-attr]
    finally:
        follow_module.finish_canary = real
    assert decided == ["won"]  # exactly one replica acted
    assert store.get_canary() is None and registry.current() == "v0001"
    assert registry.show("v0003").refused is not None  # rolled back: refused
    for svc in (first, second):
        svc.follower.tick()  # type: ignore[union-attr]
        assert served_by(svc, inside) == "fake-v1"
        assert svc.bundle_status().canary is None  # type: ignore[union-attr]


def test_start_refuses_the_current_an_unknown_or_a_refused_version(
    registry: BundleRegistry,
) -> None:
    store = MemoryStore()
    with pytest.raises(RegistryError, match="already the current"):
        start_canary(registry, store, "v0001", 0.1)
    with pytest.raises(RegistryError):
        start_canary(registry, store, "v0099", 0.1)
    first = start_canary(registry, store, "v0002", 0.1)
    with pytest.raises(RegistryError, match="a canary of v0002 runs"):
        start_canary(registry, store, "v0003", 0.1)
    assert store.get_canary() == first
    store.set_canary(None)
    registry.refuse("v0003", {"reason": "test"})
    with pytest.raises(RegistryError, match="refused"):
        start_canary(registry, store, "v0003", 0.1)
    assert store.get_canary() is None


def test_items_registered_while_a_canary_runs_reach_the_candidate_too(
    replica: Callable[..., RecommendationService], registry: BundleRegistry
) -> None:
    store = MemoryStore()
    svc = replica(store)  # no sync loop: the canary's own poll follows the change feed
    c = start_canary(registry, store, "v0002", 0.5)
    tick(svc)
    svc.items.register(item_id="mug", domain="arts", title="red mug")
    svc.follower.tick()  # type: ignore[union-attr]
    route = svc.served.canary
    assert route is not None and route.state.registered.get("mug") is not None
    inside = next(u for u in USERS if canary_bucket(u, c.salt) < 0.5)
    req = RecommendRequest(domain="arts", user_id=inside, history=["mug"], n=3)
    answer = svc.recommender.recommend(req)
    assert answer.model_version == "fake-v2" and answer.history.unknown_ids == []


def test_anonymous_requests_route_by_session_id_and_without_one_get_the_current(
    replica: Callable[..., RecommendationService], registry: BundleRegistry
) -> None:
    store = MemoryStore()
    svc = replica(store)
    c = start_canary(registry, store, "v0002", 0.5)
    tick(svc)
    sessions = [f"session-{k}" for k in range(60)]
    for s in sessions:
        want = "fake-v2" if canary_bucket(s, c.salt) < 0.5 else "fake-v1"
        for _ in range(2):  # the same answer every time
            req = RecommendRequest(domain="arts", session_id=s, n=3)
            assert svc.recommender.recommend(req).model_version == want
    assert {served_by(svc, None) for _ in range(5)} == {"fake-v1"}
