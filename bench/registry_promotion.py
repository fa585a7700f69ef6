"""Measure: time from a registry promotion to every replica serving the new version.

    python bench/registry_promotion.py [--bundle artifacts/demo-bundle] [--replicas 2]
        [--rounds 10] [--poll 0.5] [--out FILE.json]

Starts a private redis-server (no persistence, loopback, free port), a bundle registry in a
temp dir holding the bundle twice (the second copy with another ``model_version`` in its
manifest), and ``--replicas`` real ``micrec serve`` processes on it
(``MICREC_REGISTRY_DIR``, ``MICREC_REGISTRY_POLL_S=--poll``). Then ``--rounds``
promotions alternating the two versions through ``app.lifecycle.promotion.promote`` (what
``micrec bundles promote`` runs); for each one it polls every replica's ``/readyz`` every
10 ms and records the seconds from the announcement to that replica's first answer naming
the new version. Prints one JSON object: per-round times, the slowest replica per round,
median and max, and the machine load before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.lifecycle import promotion  # noqa: E402
from app.store.redis import RedisStore  # noqa: E402
from model.registry import BundleRegistry  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(url: str, proc: subprocess.Popen[bytes], timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"a replica exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{url} not ready after {timeout} s")


def serving(url: str) -> str | None:
    bundle = httpx.get(f"{url}/readyz", timeout=5).json().get("bundle") or {}
    return bundle.get("serving")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, default=ROOT / "artifacts" / "demo-bundle")
    ap.add_argument("--replicas", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--poll", type=float, default=0.5, help="MICREC_REGISTRY_POLL_S")
    ap.add_argument("--out", type=Path, help="also write the JSON here")
    args = ap.parse_args()
    if not (args.bundle / "manifest.json").is_file():
        raise SystemExit(f"no bundle at {args.bundle} (make demo-bundle)")

    tmp = Path(tempfile.mkdtemp(prefix="micrec-registry-bench-"))
    procs: list[subprocess.Popen[bytes]] = []
    load_before = os.getloadavg()
    try:
        port = free_port()
        procs.append(
            subprocess.Popen(
                ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", str(tmp)],
                stdout=subprocess.DEVNULL,
            )
        )  # fmt: skip
        redis_url = f"redis://127.0.0.1:{port}/0"
        registry = BundleRegistry(tmp / "registry")
        registry.add(args.bundle)
        copy = tmp / "bundle-b"
        shutil.copytree(args.bundle, copy)
        manifest = json.loads((copy / "manifest.json").read_text())
        manifest["model_version"] = f"{manifest['model_version']}-b"
        (copy / "manifest.json").write_text(json.dumps(manifest))
        registry.add(copy)
        store = RedisStore(redis_url)
        for _ in range(100):
            if store.ping():
                break
            time.sleep(0.05)
        promotion.promote(registry, store, "v0001", reason="bench start")

        env = {k: v for k, v in os.environ.items() if not k.startswith("MICREC_")}
        env.update(
            MICREC_REGISTRY_DIR=str(registry.root),
            MICREC_REGISTRY_POLL_S=str(args.poll),
            MICREC_STORE_URL=redis_url,
            MICREC_THREADS="1",
            MICREC_TORCH_THREADS="1",
            MICREC_FAISS_THREADS="1",
            MICREC_WARM_ENCODERS="false",
            MICREC_LOG_LEVEL="warning",
            PYTHONPATH=str(ROOT),
        )
        urls = []
        for k in range(args.replicas):
            p = free_port()
            log = open(tmp / f"replica-{k}.log", "wb")  # noqa: SIM115 - lives with the process
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "app.cli", "serve", "--port", str(p)],
                    cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                )
            )  # fmt: skip
            urls.append(f"http://127.0.0.1:{p}")
        for url, proc in zip(urls, procs[1:], strict=True):
            wait_for(f"{url}/readyz", proc)

        rounds: list[list[float]] = []
        for k in range(args.rounds):
            version = "v0002" if k % 2 == 0 else "v0001"
            time.sleep(0.3)  # do not start in phase with the previous round's polls
            done = promotion.promote(registry, store, version, reason=f"bench round {k}")
            assert done.announced_at is not None
            since = time.monotonic() - (time.time() - done.announced_at)
            times: dict[str, float] = {}
            while len(times) < len(urls):
                for url in urls:
                    if url not in times and serving(url) == version:
                        times[url] = time.monotonic() - since
                if time.monotonic() - since > 120:
                    raise SystemExit(f"round {k}: not every replica serves {version}")
                time.sleep(0.01)
            rounds.append([round(times[u], 3) for u in urls])
        store.close()
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)

    slowest = [max(r) for r in rounds]
    result: dict[str, Any] = {
        "bundle": str(args.bundle),
        "replicas": args.replicas,
        "poll_s": args.poll,
        "rounds": rounds,
        "all_serving_s": {
            "median": round(statistics.median(slowest), 3),
            "max": round(max(slowest), 3),
            "min": round(min(slowest), 3),
        },
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "cpus": os.cpu_count(),
    }
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
