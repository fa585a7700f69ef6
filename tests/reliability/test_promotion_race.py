"""Promotion / rollback race (issue 22): random promote and rollback sequences, sent while
loads are in flight, end with every replica serving the store's version.

Two real ``micrec serve`` processes on one private redis-server, serving from one bundle
registry of four loadable tiny real bundles (tests/reliability/registry_bundles.py: the
same bundle under four ``model_version`` names), default poll interval (0.5 s). Each
operation is a promote (of a random version) or a rollback, sent through the admin API
(``POST /v1/admin/bundles/promote`` / ``rollback``) of a random replica, as an operator
would, or through app/lifecycle/promotion.py from this process, as ``micrec bundles`` and ``micrec
retrain`` do (then both replicas learn of it by polling). The operations come in bursts of
random length with random gaps, so that some land while a replica is loading; half the
bursts end with the sequence of the issue: a promotion, then at once a rollback, through
one replica (which starts loading at the promotion: the rollback arrives during the load);
some send all their operations at once from threads.

* Before each operation every replica's ``/readyz`` is read: whenever it reports a
  serving version other than the one it wants, it must say ``degraded`` (with the reason).
* After each burst, both replicas are polled until they serve the store's announced
  version with nothing loading, within ``SETTLE_S`` of the burst's last operation (a
  bound the test polls within, not a speed assertion); meanwhile a replica that has seen
  the last announcement but serves another version must say ``degraded``.
* After the last burst, ``/v1/model`` names the store's version on both, and a second
  later nothing has moved (no late load replaced it).

Recorded (``RELIABILITY`` line): the operations, how many found a load in flight, each
replica's loads by result (``superseded``: dropped because the version was no longer
wanted when it was built), how many bursts ended with a replica not yet on the store's
version, and the time from a burst's last operation to both replicas serving the store's
version (the last burst's and the longest).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.lifecycle import promotion
from app.store.redis import RedisStore
from bench.redis_server import RedisServer
from model.registry import BundleRegistry, RegistryError
from tests.reliability.procs import ADMIN, AUTH, ServiceProcess, record
from tests.reliability.registry_bundles import variant

SETTLE_S = 5.0
"""Every replica serves the store's version within this after a burst's last operation."""
GAPS_S = (0.0, 0.0, 0.0, 0.05, 0.1, 0.2, 0.4)
"""Pause before an operation, drawn at random: a load of these bundles takes some tens of
milliseconds, so the short ones often land on a load in flight."""
BURST_MAX = 12
"""Operations per burst: 1 to this many."""
VERSIONS = ("v0001", "v0002", "v0003", "v0004")


@pytest.fixture(scope="module")
def registry_root(tmp_path_factory: pytest.TempPathFactory, tiny_bundle: Path) -> Path:
    root = tmp_path_factory.mktemp("registry-race")
    reg = BundleRegistry(root / "registry")
    for k, name in enumerate("ABCD"):
        src = variant(tiny_bundle, root / name, model_version=f"bundle-{name}")
        assert reg.add(src, meta={"name": name}) == VERSIONS[k]
    return reg.root


@dataclass(frozen=True)
class Op:
    promote: bool
    version: str
    via: int
    """A replica's index (its admin API), or ``len(clients)``: app/lifecycle/promotion.py here."""


class Operator:
    """Sends the random operations and counts them (every random draw on the test's
    thread, so a seed gives one sequence)."""

    def __init__(
        self, seed: int, clients: list[httpx.Client], registry: BundleRegistry, store: RedisStore
    ) -> None:
        self.rng = random.Random(seed)
        self.clients = clients
        self.registry = registry
        self.store = store
        self.counts = dict.fromkeys(
            ("promote", "rollback", "rollback_refused", "via_api", "loading", "pairs"), 0
        )
        self.counts["concurrent"] = 0

    @property
    def done(self) -> int:
        return self.counts["promote"] + self.counts["rollback"] + self.counts["rollback_refused"]

    def burst(self, most: int) -> None:
        """1 to ``most`` operations. Half the bursts of two or more end with the issue's
        sequence (a promotion, then at once a rollback, through one replica); a quarter
        of the others send all theirs at once from threads; the rest one at a time after
        a random gap, every replica's report checked before each."""
        n = self.rng.randint(1, most)
        pair = n >= 2 and self.rng.random() < 0.5
        if not pair and n >= 2 and self.rng.random() < 0.25:
            ops = [self.draw() for _ in range(n)]
            with ThreadPoolExecutor(n) as pool:
                for kind in pool.map(self.operate, ops):
                    self.counts[kind] += 1
            self.counts["concurrent"] += n
            self.counts["via_api"] += sum(op.via < len(self.clients) for op in ops)
            return
        for _ in range(n - 2 if pair else n):
            time.sleep(self.rng.choice(GAPS_S))
            self.check_reports()
            op = self.draw()
            self.counts[self.operate(op)] += 1
            self.counts["via_api"] += op.via < len(self.clients)
        if pair:
            self.promote_then_rollback()

    def draw(self) -> Op:
        promote = self.rng.random() < 0.5
        return Op(promote, self.rng.choice(VERSIONS), self.rng.randrange(len(self.clients) + 1))

    def check_reports(self) -> None:
        bodies = [_ready(http) for http in self.clients]
        for body in bodies:
            _check_report(body)
        self.counts["loading"] += any(b["bundle"]["loading"] for b in bodies)

    def promote_then_rollback(self) -> None:
        """Promote another version than the current one through a replica's admin API (it
        starts loading at once), and roll back through it with no pause."""
        via = self.rng.randrange(len(self.clients))
        version = self.rng.choice([v for v in VERSIONS if v != self.registry.current()])
        self.check_reports()
        assert self.operate(Op(True, version, via)) == "promote"
        assert self.operate(Op(False, version, via)) == "rollback"  # undoes that promotion
        self.counts["promote"] += 1
        self.counts["rollback"] += 1
        self.counts["via_api"] += 2
        self.counts["pairs"] += 1

    def operate(self, op: Op) -> str:
        """Send ``op``; returns what it did: promote, rollback or rollback_refused
        (nothing left to roll back to)."""
        kind = "promote" if op.promote else "rollback"
        if op.via == len(self.clients):
            try:
                if op.promote:
                    promotion.promote(self.registry, self.store, op.version, reason="race")
                else:
                    promotion.rollback(self.registry, self.store, reason="race")
            except RegistryError as err:
                assert not op.promote and "nothing to roll back" in str(err), err
                return "rollback_refused"
            return kind
        http = self.clients[op.via]
        if op.promote:
            r = http.post("/v1/admin/bundles/promote", json={"version": op.version}, headers=ADMIN)
        else:
            r = http.post("/v1/admin/bundles/rollback", json={}, headers=ADMIN)
        if r.status_code == 409 and not op.promote:
            assert "nothing to roll back" in r.json()["detail"], r.text
            return "rollback_refused"
        assert r.status_code == 200, r.text
        return kind


def _ready(http: httpx.Client) -> dict[str, Any]:
    body: dict[str, Any] = http.get("/readyz").json()
    return body


def _loads(http: httpx.Client) -> dict[str, int]:
    """The replica's model loads by result (``micrec_model_reloads_total``): ``superseded``
    ones were dropped because a rollback or promotion came during the load."""
    out = {}
    for line in http.get("/metrics").text.splitlines():
        if line.startswith("micrec_model_reloads_total{"):
            result = line.split('result="', 1)[1].split('"', 1)[0]
            out[result] = int(float(line.rsplit(" ", 1)[1]))
    return out


def _check_report(body: dict[str, Any], store_version: str | None = None) -> None:
    """A replica serving another version than it wants (or than the store's, once it has
    seen that one) says so in /readyz."""
    bundle = body["bundle"]
    behind = bundle["serving"] != bundle["wanted"]
    if store_version is not None and bundle["wanted"] == store_version:
        behind = behind or bundle["serving"] != store_version
    if behind:
        words = (body["status"], bundle, body.get("degraded"), store_version)
        assert body["status"] == "degraded", words
        assert any(f"bundle {bundle['wanted']}" in d for d in body["degraded"]), words


@dataclass(frozen=True)
class Settled:
    """One wait for every replica to serve the store's version (:func:`settle`)."""

    version: str
    took_s: float
    """From the first poll to the last replica on ``version`` with nothing loading."""
    behind: bool
    """A replica was not there yet at the first poll."""
    reports: int


def settle(clients: list[httpx.Client], store: RedisStore) -> Settled:
    """Poll every replica until it serves the store's version with nothing loading,
    checking its reports meanwhile; fails after ``SETTLE_S``."""
    wanted = store.get_bundle_version()
    assert wanted is not None
    start = time.monotonic()
    pending = dict(enumerate(clients))
    last: dict[int, dict[str, Any]] = {}
    reports, behind = 0, False
    while True:
        for k, http in list(pending.items()):
            last[k] = body = _ready(http)
            _check_report(body, wanted.version)
            reports += 1
            bundle = body["bundle"]
            if bundle["serving"] == bundle["wanted"] == wanted.version and not bundle["loading"]:
                assert body["status"] == "ready", body
                del pending[k]
            else:
                behind = True
        took = time.monotonic() - start
        if not pending:
            return Settled(wanted.version, took, behind, reports)
        assert took < SETTLE_S, (
            f"not every replica serves {wanted.version} (the store's) {SETTLE_S} s after the "
            f"last operation: {[last[k] for k in pending]}"
        )
        time.sleep(0.02)


@pytest.mark.parametrize(
    ("operations", "seed"),
    [
        pytest.param(20, 1, id="20-ops"),
        pytest.param(200, 2, id="200-ops", marks=pytest.mark.slow),
    ],
)
def test_random_promotions_and_rollbacks_converge(
    redis_server: RedisServer,
    make_service: Callable[..., ServiceProcess],
    registry_root: Path,
    operations: int,
    seed: int,
) -> None:
    store = RedisStore(redis_server.url)
    registry = BundleRegistry(registry_root)
    replicas = [
        make_service(redis_server.url, name=f"replica-{k}", registry_dir=str(registry_root))
        for k in "ab"
    ]
    try:
        promotion.promote(registry, store, "v0001", reason="race: initial")
        for svc in replicas:
            svc.micrec_serve = True
            svc.start(wait_ready=False)  # start both, then wait: the imports overlap
        for svc in replicas:
            svc.wait_ready()
        clients = [httpx.Client(base_url=svc.url, timeout=10) for svc in replicas]
        try:
            operator = Operator(seed, clients, registry, store)
            settled: list[Settled] = []
            started = time.monotonic()
            while operator.done < operations:
                operator.burst(min(BURST_MAX, operations - operator.done))
                settled.append(settle(clients, store))
            operating_s = time.monotonic() - started

            version = settled[-1].version
            assert registry.current() == version
            time.sleep(1.0)  # two poll intervals: nothing may move any more
            for http in clients:
                body = _ready(http)
                assert body["status"] == "ready", body
                assert body["bundle"] == {
                    "serving": version,
                    "wanted": version,
                    "loading": None,
                    "error": None,
                    "canary": None,
                }, body
                info = http.get("/v1/model", headers=AUTH).json()
                assert info["bundle_version"] == version, info
            loads = [_loads(http) for http in clients]
        finally:
            for http in clients:
                http.close()
    finally:
        store.close()
    counts = operator.counts
    record(
        "promotion-race",
        replicas=2,
        poll_s=0.5,
        seed=seed,
        operations=operations,
        promotes=counts["promote"],
        rollbacks=counts["rollback"],
        rollbacks_refused=counts["rollback_refused"],
        through_the_admin_api=counts["via_api"],
        promote_then_rollback_pairs=counts["pairs"],
        sent_concurrently=counts["concurrent"],
        operations_with_a_load_in_flight=counts["loading"],
        bursts=len(settled),
        bursts_ending_with_a_replica_behind=sum(s.behind for s in settled),
        operating_s=round(operating_s, 1),
        final_version=version,
        loads_per_replica=loads,
        reports_checked_while_settling=sum(s.reports for s in settled),
        last_operation_to_all_serving_s=round(settled[-1].took_s, 3),
        burst_end_to_all_serving_max_s=round(max(s.took_s for s in settled), 3),
    )
