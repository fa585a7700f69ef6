"""Promotion reloads every replica: two real ``micrec serve`` processes on one real Redis,
serving from one bundle registry (``MICREC_REGISTRY_DIR``, default poll interval).

Bundles: one tiny real bundle (tests/reliability/registry_bundles.py, trained once per
session) added three times: A as is, B with another ``model_version`` in its
manifest, C with a model config this code cannot load (its files still pass the
registry's checksum check, like a bundle written by another code version).

* promote B, A, B, A (app/lifecycle/promotion.py, as ``micrec retrain`` does) -> both replicas
  serve each one, ``/v1/model`` names it, recommendations answer;
* ``micrec bundles rollback`` (the CLI, a separate process) -> both serve B again;
* promote C -> both keep serving B; ``/readyz`` says ``degraded`` with
  ``bundle: {serving: v0002, wanted: v0003, error}``; recommendations still answer.

The time from the announcement (its time in the store) to each replica's first
``/readyz`` naming the new version is recorded (``RELIABILITY`` line), not asserted: the bound only
ends a failing test.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.lifecycle import promotion
from app.store.redis import RedisStore
from bench.redis_server import RedisServer
from model.registry import BundleRegistry
from tests.reliability.procs import AUTH, REPO, ServiceProcess, record
from tests.reliability.registry_bundles import variant

BOUND_S = 120.0  # ends a failing test only


@pytest.fixture(scope="module")
def registry_root(tmp_path_factory: pytest.TempPathFactory, tiny_bundle: Path) -> Path:
    root = tmp_path_factory.mktemp("registry-e2e")
    reg = BundleRegistry(root / "registry")
    reg.add(tiny_bundle, meta={"name": "A"})
    reg.add(variant(tiny_bundle, root / "b", model_version="bundle-B"), meta={"name": "B"})
    reg.add(variant(tiny_bundle, root / "c", model_config={"dim": 7}), meta={"name": "C broken"})
    return reg.root


ROUNDS = 4  # promotions alternating B, A, B, A: each one timed


def _ready(http: httpx.Client) -> dict[str, Any]:
    body: dict[str, Any] = http.get("/readyz").json()
    return body


def _since_announced(store: RedisStore) -> float:
    """The announcement's time on this process's monotonic clock (same host)."""
    wanted = store.get_bundle_version()
    assert wanted is not None
    return time.monotonic() - (time.time() - wanted.announced_at)


def _until_all(clients: list[httpx.Client], version: str, since: float) -> list[float]:
    """Seconds from ``since`` to each replica's first /readyz naming ``version``."""
    pending = dict(enumerate(clients))
    times = [0.0] * len(clients)
    last: dict[int, dict[str, Any]] = {}
    while pending:
        for k, http in list(pending.items()):
            last[k] = _ready(http)
            if last[k]["bundle"]["serving"] == version:
                times[k] = time.monotonic() - since
                del pending[k]
        # the replicas' own words, should this ever fail (it failed once, unreproduced)
        assert time.monotonic() - since < BOUND_S, (
            f"not every replica serves {version}: {[last[k] for k in pending]}"
        )
        time.sleep(0.01)
    return times


def _cli(registry: Path, store_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MICREC_")}
    env.update(
        PYTHONPATH=str(REPO),
        MICREC_REGISTRY_DIR=str(registry),
        MICREC_STORE_URL=store_url,
        MICREC_THREADS="1",
    )
    return subprocess.run(
        [sys.executable, "-m", "app.cli", "bundles", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_promotion_and_rollback_reach_every_replica(
    redis_server: RedisServer,
    make_service: Callable[..., ServiceProcess],
    registry_root: Path,
) -> None:
    registry = BundleRegistry(registry_root)
    store = RedisStore(redis_server.url)
    try:
        promotion.promote(registry, store, "v0001", reason="initial")
        replicas = [
            make_service(redis_server.url, name=f"replica-{k}", registry_dir=str(registry_root))
            for k in "ab"
        ]
        for svc in replicas:
            svc.micrec_serve = True
            svc.start(wait_ready=False)  # start both, then wait: the imports overlap
        for svc in replicas:
            svc.wait_ready()
        clients = [httpx.Client(base_url=svc.url, timeout=10) for svc in replicas]
        try:
            for http in clients:
                body = _ready(http)
                assert body["bundle"] == {
                    "serving": "v0001",
                    "wanted": "v0001",
                    "loading": None,
                    "error": None,
                    "canary": None,
                }
                assert body["status"] == "ready"

            # promote B, then A, B...: every replica reloads each time
            promote_s: list[float] = []
            for k in range(ROUNDS):
                version, model = ("v0002", "bundle-B") if k % 2 == 0 else ("v0001", None)
                promotion.promote(registry, store, version, reason=f"e2e round {k}")
                promote_s += _until_all(clients, version, _since_announced(store))
                for http in clients:
                    info = http.get("/v1/model", headers=AUTH).json()
                    assert info["bundle_version"] == version, (info, _ready(http))
                    assert model is None or info["model_version"] == model, info
                    r = http.post(
                        "/v1/recommend", json={"domain": info["domains"][0]}, headers=AUTH
                    )
                    assert r.status_code == 200, r.text

            # rollback with the CLI (its own process): every replica serves B again
            out = _cli(registry_root, redis_server.url, "rollback", "--reason", "e2e")
            assert out.returncode == 0, out.stderr
            assert out.stdout.startswith("rolled back to v0002 (was v0001)")
            rollback_s = _until_all(clients, "v0002", _since_announced(store))

            # a version no replica can load: B keeps serving, /readyz says why
            promotion.promote(registry, store, "v0003", reason="e2e: broken")
            for http in clients:
                deadline = time.monotonic() + BOUND_S
                while _ready(http)["bundle"]["error"] is None:
                    assert time.monotonic() < deadline, _ready(http)
                    time.sleep(0.05)
                r = http.get("/readyz")
                body = r.json()
                assert r.status_code == 200 and body["status"] == "degraded", body
                assert body["bundle"]["serving"] == "v0002"
                assert body["bundle"]["wanted"] == "v0003"
                assert "does not match this model code" in body["bundle"]["error"]
                assert "bundle v0003 could not be loaded; serving v0002" in body["degraded"]
                assert http.get("/v1/model", headers=AUTH).json()["bundle_version"] == "v0002"
                assert "micrec_bundle_in_sync 0.0" in http.get("/metrics").text
                domain = http.get("/v1/model", headers=AUTH).json()["domains"][0]
                r = http.post("/v1/recommend", json={"domain": domain, "n": 5}, headers=AUTH)
                assert r.status_code == 200, r.text
        finally:
            for http in clients:
                http.close()
    finally:
        store.close()
    record(
        "registry-promotion",
        replicas=2,
        poll_s=0.5,
        promote_to_all_serving_s=[round(t, 3) for t in promote_s],
        rollback_to_all_serving_s=[round(t, 3) for t in rollback_s],
    )
