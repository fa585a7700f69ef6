"""Soak (slow): bounded mixed traffic against the production app, zero errors, flat RSS.

A real uvicorn process running the production factory (``app.http.main:create_app``) on a
real tiny trained bundle (tests/app/real_bundle.py, MiniLM text encoder) with the Redis
store. Client threads send, for ``RELIABILITY_SOAK_S`` seconds (default 300) and at most
``SOAK_BUDGET`` requests, a mix of: recommendations for bundle users, inline-history
users and API users with stored history, the GET recommendations route, similar items,
item lookups, interaction batches, item registrations (text encoded by MiniLM) with
deletion of older ones (so the registered set churns but stays bounded), item
replacement (PUT), /readyz and /metrics.

Asserted: every response is the expected 2xx (zero errors, zero transport failures), and
the service's RSS at the end is less than 5% above its RSS after the warm-up (the first
20% of the run). Recorded: requests sent per kind, RSS samples (start, after warm-up,
max, end) and the growth.

Item texts cycle through ``TITLES`` distinct strings (every item id is new). Encoding
*distinct* texts grows the process by ~30 MB over the first ~4000 texts and then stays
flat (measured with the engine alone; not the tokenizer, and malloc_trim does not return
it): bounded memory of the text-encoding path, which a 5-minute run would otherwise
report as service growth. docs/results/reliability.md gives the figures.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from bench.redis_server import RedisServer
from tests.app.real_bundle import RealBundles, build_real_bundles
from tests.reliability.procs import AUTH, REAL_APP, ServiceProcess, record
from tests.reliability.traffic import Traffic

pytestmark = pytest.mark.slow

SOAK_S = float(os.environ.get("RELIABILITY_SOAK_S", "300"))
SOAK_BUDGET = 200_000
WARMUP_FRACTION = 0.2
MAX_RSS_GROWTH = 0.05
CHURN = 20  # registered items kept alive per registering worker
TITLES = 100  # distinct item texts; item ids are all distinct (module docstring)
API_USERS = [f"soak-user-{k}" for k in range(40)]


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> RealBundles:
    return build_real_bundles(tmp_path_factory.mktemp("soak-real"))


@pytest.fixture
def service(
    real: RealBundles, redis_server: RedisServer, tmp_path: Path
) -> Iterator[ServiceProcess]:
    svc = ServiceProcess(
        {
            "MICREC_BUNDLE_PATH": str(real.v1),
            "MICREC_STORE_URL": redis_server.url,
            "MICREC_WARM_ENCODERS": "true",
            "MICREC_HISTORY_CAP": "50",
        },
        app=REAL_APP,
        log_path=tmp_path / "soak.log",
    )
    with svc:
        yield svc


def _workers(
    real: RealBundles,
) -> list[tuple[str, str, Callable[[httpx.Client, int], httpx.Response]]]:
    domains = sorted(real.split.domains)
    items = {d: list(real.split.domains[d].item_ids) for d in domains}
    users = {d: list(real.split.domains[d].user_ids) for d in domains}

    def dom(k: int) -> str:
        return domains[k % len(domains)]

    def rec_bundle_user(http: httpx.Client, k: int) -> httpx.Response:
        d = dom(k)
        body = {"user_id": users[d][k % len(users[d])], "domain": d, "n": 10}
        return http.post("/v1/recommend", json=body, headers=AUTH)

    def rec_inline(http: httpx.Client, k: int) -> httpx.Response:
        d, o = dom(k), dom(k + 1)
        history = [items[o][(k * 7 + j) % len(items[o])] for j in range(5)]
        body = {"history": history, "domain": d, "n": 20}
        return http.post("/v1/recommend", json=body, headers=AUTH)

    def rec_api_user(http: httpx.Client, k: int) -> httpx.Response:
        user = API_USERS[k % len(API_USERS)]
        return http.get(f"/v1/users/{user}/recommendations?domain={dom(k)}&n=10", headers=AUTH)

    def similar(http: httpx.Client, k: int) -> httpx.Response:
        d = dom(k)
        return http.get(f"/v1/items/{items[d][k % len(items[d])]}/similar?n=10", headers=AUTH)

    def lookup_and_probes(http: httpx.Client, k: int) -> httpx.Response:
        if k % 10 == 0:
            return http.get("/metrics")
        if k % 10 == 1:
            return http.get("/readyz")
        d = dom(k)
        return http.get(f"/v1/items/{items[d][k % len(items[d])]}", headers=AUTH)

    def interactions(http: httpx.Client, k: int) -> httpx.Response:
        rows = [
            {"user_id": API_USERS[(k + j) % len(API_USERS)], "item_id": items[d][(k + j) % 50]}
            for j, d in enumerate(domains * 2)
        ]
        return http.post("/v1/interactions", json={"interactions": rows}, headers=AUTH)

    def churn(http: httpx.Client, k: int) -> httpx.Response:
        # k even: register item k//2; k odd: replace it (PUT), and delete the one CHURN older
        n = k // 2
        d = dom(n)
        if k % 2 == 0:
            if n >= CHURN:
                r = http.delete(f"/v1/items/soak-{n - CHURN}", headers=AUTH)
                if r.status_code != 204:
                    return r
            title = f"soak item {n % TITLES} for {d}"
            body = {"item_id": f"soak-{n}", "domain": d, "title": title}
            return http.post("/v1/items", json=body, headers=AUTH)
        body = {"domain": d, "title": f"soak item {n % TITLES} updated", "categories": ["Soak"]}
        return http.put(f"/v1/items/soak-{n}", json=body, headers=AUTH)

    return [
        ("read", "recommend_bundle_user", rec_bundle_user),
        ("read", "recommend_inline", rec_inline),
        ("read", "recommend_api_user", rec_api_user),
        ("read", "similar", similar),
        ("read", "lookup_probes", lookup_and_probes),
        ("write", "interactions", interactions),
        ("write", "register_put_delete", churn),
    ]


@pytest.mark.timeout(SOAK_S + 600)  # the run itself + building the bundle + slack
def test_soak(real: RealBundles, service: ServiceProcess) -> None:
    traffic = Traffic(service.url, _workers(real), timeout_s=30, budget=SOAK_BUDGET)
    samples: list[tuple[float, int, int]] = []  # (seconds since start, requests, RSS KiB)
    stop = threading.Event()
    t_start = time.monotonic()

    def sample() -> None:
        while not stop.is_set():
            samples.append((time.monotonic() - t_start, traffic.count(), service.rss_kib()))
            stop.wait(1.0)

    rss_start = service.rss_kib()
    sampler = threading.Thread(target=sample, daemon=True)
    traffic.start()
    sampler.start()
    warmup_end = SOAK_S * WARMUP_FRACTION
    try:
        while time.monotonic() - t_start < SOAK_S and not traffic.done():
            time.sleep(0.5)
            assert service.running, service.log_tail()
    finally:
        outcomes = traffic.stop()
        stop.set()
        sampler.join(10)
    samples.append((time.monotonic() - t_start, len(outcomes), service.rss_kib()))
    duration = time.monotonic() - t_start

    errors = [o for o in outcomes if not 200 <= o.status < 300]
    after_warmup = [s for s in samples if s[0] >= warmup_end]
    assert after_warmup, samples
    rss_warm = after_warmup[0][2]
    rss_end = samples[-1][2]
    rss_max = max(s[2] for s in samples)
    rss_max_after_warmup = max(s[2] for s in after_warmup)
    growth = (rss_end - rss_warm) / rss_warm
    figures = {
        "duration_s": round(duration, 1),
        "requests": len(outcomes),
        "requests_after_warmup": len(outcomes) - after_warmup[0][1],
        "by_kind": dict(sorted(Counter(o.name for o in outcomes).items())),
        "errors": len(errors),
        "first_errors": [f"{o.name} {o.status} {o.error}" for o in errors[:5]],
        "rss_kib": {
            "start": rss_start,
            "after_warmup": rss_warm,
            "max": rss_max,
            "max_after_warmup": rss_max_after_warmup,
            "end": rss_end,
        },
        "rss_growth_after_warmup_pct": round(100 * growth, 2),
        "rss_max_growth_after_warmup_pct": round(
            100 * (rss_max_after_warmup - rss_warm) / rss_warm, 2
        ),
        "warmup_s": warmup_end,
    }
    record("soak", **figures)
    assert not errors, figures
    assert growth < MAX_RSS_GROWTH, figures
