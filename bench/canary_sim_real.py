"""The canary simulation on real bundles and real processes (bench/canary_sim.py's
``main``; the slow test tests/reliability/test_canary_sim.py runs it small).

1. Three tiny bundles of the synthetic catalogue (text-free, score blend fitted): v0001
   trained on the catalogue; v0002 also on shoppers who each buy from one of two sets of
   10 office items (the pattern the population follows); v0003 on the catalogue with
   every row's item drawn at random (a candidate that learned nothing).
2. A private redis-server and two ``micrec serve`` replicas on it, serving the registry.
3. The population: new users, each with 3 items of their set as stored history; they like
   the other 7 items of their set (``Population.liked``).
4. Canary v0002 (promoted by the rule), then canary v0003 (rolled back by the rule).
"""

from __future__ import annotations

import csv
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from canary_sim import Population, Simulator, events_at_decision
from redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[1]
API_KEY, ADMIN_KEY = "sim-api-key-0123456789", "sim-admin-key-0123456789"
GROUP = 10


class Replica:
    """One ``micrec serve`` process started here (stopped by its pid)."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1",
               "--port", str(self.port)]  # fmt: skip
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                cmd, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT
            )

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"micrec serve exited ({self.proc.returncode})")
            try:
                if httpx.get(self.base_url + "/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError("micrec serve did not become ready")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _cfg(work: Path, epochs: int) -> Any:
    from model.runconfig import load_run_config

    return load_run_config(
        None,
        {
            "features": {"text": "none", "image": "none", "cache_dir": str(work / "cache")},
            "model": {"modalities": []},
            "train": {"epochs": epochs, "patience": 100, "batch_size": 512, "lr": 0.005},
            "blend": {"enabled": True, "trials": 3, "content_dim": 0, "max_users": 200},
            "bridge": {"enabled": False},
            "item_map": {"enabled": False},
            "tune": {"trials": 0},
        },
    )


def _write(folder: Path, items: Path, header: list[str], rows: list[list[str]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "items.csv").write_bytes(items.read_bytes())
    with open(folder / "interactions.csv", "w", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    return folder


def train_bundles(work: Path, epochs: int = 20) -> tuple[list[Path], list[list[str]]]:
    """(v0001, v0002, v0003 bundle dirs), the two sets of office items of the pattern."""
    from model.data.synth import SynthConfig, write_synthetic_catalogue
    from model.pipeline import train_run

    data = work / "data"
    write_synthetic_catalogue(data, SynthConfig.tiny(images=False, users=300))
    with open(data / "interactions.csv", newline="") as f:
        reader = csv.reader(f)
        header, rows = next(reader), list(reader)
    office = Counter(r[1] for r in rows if r[2] == "office")
    least = sorted(office, key=lambda i: (office[i], i))
    groups = [least[:GROUP], least[GROUP : 2 * GROUP]]
    rng = np.random.default_rng(0)
    t0 = max(int(r[3]) for r in rows) + 1000
    pattern = [
        [f"shopper-{k}", str(item), "office", str(t0 + 10 * k + j)]
        for k in range(240)
        for j, item in enumerate(rng.permutation(groups[k % 2])[:6])
    ]
    by_domain: dict[str, list[str]] = {}
    for r in rows:
        by_domain.setdefault(r[2], []).append(r[1])
    pools = {d: sorted(set(v)) for d, v in by_domain.items()}
    shuffled = [[u, str(rng.choice(pools[d])), d, t] for u, _, d, t in rows]
    items = data / "items.csv"
    sources = {
        "v1": data,
        "v2": _write(work / "data-pattern", items, header, rows + pattern),
        "v3": _write(work / "data-random", items, header, shuffled),
    }
    out = []
    for name, folder in sources.items():
        trained = train_run(folder, _cfg(work, epochs), work / name, progress=False, run_test=False)
        out.append(trained.bundle_dir)
    return out, groups


def run_real(*, users: int, min_events: int, share: str, epochs: int = 20) -> dict[str, Any]:
    from model.registry import BundleRegistry

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        t = time.monotonic()
        bundles, groups = train_bundles(work, epochs)
        train_s = time.monotonic() - t
        reg = BundleRegistry(work / "registry")
        for b in bundles:
            reg.add(b)
        reg.promote("v0001", "simulation start")
        with RedisServer(work / "redis") as redis:
            env = {
                **{k: v for k, v in os.environ.items() if not k.startswith("MICREC_")},
                "PYTHONPATH": os.environ.get("PYTHONPATH", str(ROOT)),
                "OMP_NUM_THREADS": "1",
                "MICREC_THREADS": "1",
                "MICREC_TORCH_THREADS": "1",
                "MICREC_FAISS_THREADS": "1",
                "MICREC_REGISTRY_DIR": str(reg.root),
                "MICREC_STORE_URL": redis.url,
                "MICREC_API_KEYS": API_KEY,
                "MICREC_ADMIN_KEYS": ADMIN_KEY,
                "MICREC_REGISTRY_POLL_S": "0.1",
                "MICREC_CANARY_CHECK_S": "0.2",
                "MICREC_CANARY_MIN_EVENTS": str(min_events),
                "MICREC_CANARY_METRIC": "ctr",
                "MICREC_RECORD_FLUSH_S": "0.05",
                "MICREC_LOG_LEVEL": "warning",
            }
            procs = [Replica(env, work / f"replica-{k}.log") for k in range(2)]
            try:
                for p in procs:
                    p.wait_ready(600)
                return {
                    "config": {"users": users, "min_events": min_events, "share": share,
                               "epochs": epochs, "replicas": 2, "train_s": round(train_s, 1)},
                    **simulate(procs, groups, users=users, share=share, min_events=min_events),
                }  # fmt: skip
            finally:
                for p in procs:
                    p.stop()


def simulate(
    procs: list[Replica],
    groups: list[list[str]],
    *,
    users: int,
    share: str,
    min_events: int,
) -> dict[str, Any]:
    clients = [
        httpx.Client(base_url=p.base_url, headers={"X-API-Key": API_KEY}, timeout=30) for p in procs
    ]
    admin = httpx.Client(base_url=procs[0].base_url, headers={"X-API-Key": ADMIN_KEY}, timeout=60)
    rng = np.random.default_rng(1)
    liked, rows = {}, []
    for k in range(users):
        user, items = f"sim-{k:04d}", list(rng.permutation(groups[k % 2]))
        rows += [{"user_id": user, "item_id": i, "timestamp": time.time()} for i in items[:3]]
        liked[user] = set(items[3:])
    for start in range(0, len(rows), 500):
        clients[0].post("/v1/interactions", json={"interactions": rows[start : start + 500]})
    sim = Simulator(clients, admin, Population("office", liked), n=10, seed=2)
    out: dict[str, Any] = {}
    for name, version in (("better", "v0002"), ("random_items", "v0003")):
        run = sim.run_canary(version, share, max_requests=50 * min_events)
        out[name] = run.to_json() | {"events_at_decision": events_at_decision(run.decision)}
    return out
