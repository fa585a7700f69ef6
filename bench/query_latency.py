"""Latency of query recommends (a visitor's free text) next to history recommends.

    python bench/query_latency.py --bundle artifacts/demo-bundle \\
        --bundle-padded artifacts/serve-work/bundle-100000 --concurrency 8 --rounds 4 \\
        --out docs/results/query-latency

One ``micrec serve`` (``--workers``, Redis store, its own encoder process) on the padded
bundle (bench/serve_bundles.py: 1e5 items per domain), seeded and warmed like
bench/serve.py. Then, for ``--rounds`` rounds, two closed-loop windows back to back at
``--concurrency``: inline-history recommends (bench/serve.py's "inductive" bodies) and
query recommends (``{"query": {"text": <a catalogue title>}}``, which the encoder process
embeds with the bundle's text encoder). Both see the same background load; the per-round
ratio query / history is what is compared (median over rounds). Writes ``<out>.json``
and ``<out>.md``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
from redis_server import RedisServer
from serve_bench import Bench
from serve_common import API_KEY, free_port, log
from serve_http import seed_and_warm
from serve_procs import ServerProcess
from serve_requests import build_requests


def query_bodies(src: Path, count: int, n: int, seed: int = 0) -> list[str]:
    """``count`` text queries: titles of the bundle's items, in their domain."""
    from model.bundle import load_bundle

    b = load_bundle(src)
    rng = np.random.default_rng(seed)
    domains = sorted(b.domains)
    out = []
    for k in range(count):
        d = domains[k % len(domains)]
        titles = b.domains[d].titles
        title = titles[int(rng.integers(len(titles)))] or "notebook"
        out.append(json.dumps({"domain": d, "n": n, "query": {"text": title}}))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--bundle", default="artifacts/demo-bundle")
    ap.add_argument("--bundle-padded", default="artifacts/serve-work/bundle-100000")
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--window", type=float, default=8.0, help="seconds per window")
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--n", type=int, default=10, help="items per answer")
    ap.add_argument("--ready-timeout", type=float, default=900)
    ap.add_argument("--out", default="/tmp/micrec-query-latency")
    a = ap.parse_args()
    bench = Bench(argparse.Namespace(**vars(a), source_root=None))
    reqs = build_requests(Path(a.bundle), a.items)
    history = reqs["bodies"]["inductive"]
    history = [json.dumps({**json.loads(b), "n": a.n}) for b in history]
    queries = query_bodies(Path(a.bundle), 300, a.n)
    report: dict[str, Any] = {"command": shlex.join(["python", *sys.argv]), "rounds": []}
    with ExitStack() as stack:
        redis_url = stack.enter_context(RedisServer()).url
        cache = stack.enter_context(tempfile.TemporaryDirectory(prefix="micrec-qlat-"))
        port = free_port()
        env = bench.env(
            {
                "MICREC_BUNDLE_PATH": str(Path(a.bundle_padded).resolve()),
                "MICREC_STORE_URL": redis_url,
                "MICREC_API_KEYS": API_KEY,
                "MICREC_LOG_LEVEL": "warning",
                "MICREC_SERVING_CACHE_DIR": cache,
            }
        )
        cmd = [sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1"]
        cmd += ["--port", str(port), "--workers", str(a.workers)]
        server = ServerProcess(cmd, env, port, bench.tmp / "query-latency.log")
        server.start()
        stack.callback(server.stop)
        server.wait_ready("/readyz", a.workers, a.ready_timeout)
        seed_and_warm(server, reqs, a.workers, a.ready_timeout)
        log("server ready")
        for r in range(a.rounds):
            row: dict[str, Any] = {"round": r}
            for name, bodies in (("history", history), ("query", queries)):
                g = {
                    "name": name,
                    "tasks": a.concurrency,
                    "path": "/v1/recommend",
                    "bodies": bodies,
                }
                p = bench.run_point(server, {"kind": name}, [g], a.window)
                res = p["groups"][name]
                row[name] = {
                    "rps": res["throughput_rps"],
                    "p50_ms": res["p50_ms"],
                    "p99_ms": res["p99_ms"],
                    "errors": res["errors"],
                    "cpu_ms_per_req": p["server_cpu_s"] / max(1, res["count"]) * 1000,
                    "loadavg": p["loadavg_1m_max"],
                }
            row["p99_ratio"] = row["query"]["p99_ms"] / row["history"]["p99_ms"]
            row["rps_ratio"] = row["query"]["rps"] / row["history"]["rps"]
            log(f"round {r}: {row}")
            report["rounds"].append(row)
    bench.loadavg.stop()
    report["loadavg_samples"] = bench.loadavg.samples
    Path(a.out).with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    md = markdown(report, a)
    Path(a.out).with_suffix(".md").write_text(md)
    print(md)
    return 0


def markdown(report: dict[str, Any], a: Any) -> str:
    rows = report["rounds"]
    loads = [v for _, v in report["loadavg_samples"]] or [0.0]

    def med(name: str, key: str) -> float:
        return statistics.median(r[name][key] for r in rows)

    out = [
        f"Command: `{report['command']}`  ",
        f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {a.workers} worker(s); "
        f"c={a.concurrency}; {a.items:,} items per domain; {a.rounds} rounds of "
        f"{a.window:.0f} s per kind; load average (1 min) {min(loads):.1f}-{max(loads):.1f}",
        "",
        "Median over rounds:",
        "",
        "| recommend | rps | p50 ms | p99 ms | server CPU ms/req | errors |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name in ("history", "query"):
        errors = sum(r[name]["errors"] for r in rows)
        out.append(
            f"| {name} | {med(name, 'rps'):,.1f} | {med(name, 'p50_ms'):.1f} | "
            f"{med(name, 'p99_ms'):.0f} | {med(name, 'cpu_ms_per_req'):.2f} | {errors} |"
        )
    p99 = statistics.median(r["p99_ratio"] for r in rows)
    rps = statistics.median(r["rps_ratio"] for r in rows)
    out += [
        "",
        f"Query / history, median of the per-round ratios: p99 {p99:.2f} x, rps {rps:.2f} x.",
        "",
        "| round | history p99 ms | query p99 ms | p99 ratio | history rps | query rps |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        out.append(
            f"| {r['round']} | {r['history']['p99_ms']:.0f} | {r['query']['p99_ms']:.0f} | "
            f"{r['p99_ratio']:.2f} | {r['history']['rps']:.1f} | {r['query']['rps']:.1f} |"
        )
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.exit(main())
