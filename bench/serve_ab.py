"""Interleaved A/B of service variants on a shared, noisy machine (bench/serve.py's parts).

    python bench/serve_ab.py --variant before=/tmp/src-main \\
        --variant after=. --variant cache=.:MICREC_TOPN_CACHE_ITEMS=200 \\
        --workers 1 --concurrency 32 --rounds 4 --window 6 --out /tmp/ab

Every variant (a source tree plus service settings) and the bare endpoint are started
*together*, each on its own port (and its own Redis), seeded and warmed like bench/serve.py;
then the load generator visits them in turn, ``--window`` seconds each, for ``--rounds``
rounds. Load from other jobs changes over minutes; a round takes seconds, so every variant
sees the same background load, and the per-round ratio to the bare endpoint measured right
next to it is what is compared (median over rounds). Writes ``<out>.json`` and ``<out>.md``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from redis_server import RedisServer
from serve_bench import Bench
from serve_common import API_KEY, ROOT, free_port, log
from serve_http import seed_and_warm
from serve_procs import ServerProcess
from serve_requests import build_requests, recommend_mix


def parse_variant(text: str) -> tuple[str, Path, dict[str, str]]:
    """``name=source[:KEY=VALUE:...]``."""
    name, _, rest = text.partition("=")
    source, *settings = rest.split(":")
    return name, Path(source).resolve(), dict(s.split("=", 1) for s in settings)


def start_variant(
    bench: Bench, stack: ExitStack, variant: tuple[str, Path, dict[str, str]], a: Any
) -> ServerProcess:
    name, source, settings = variant
    redis_url = stack.enter_context(RedisServer()).url
    port = free_port()
    env = bench.env(
        {
            "MICREC_BUNDLE_PATH": str(Path(a.bundle_padded).resolve()),
            "MICREC_STORE_URL": redis_url,
            "MICREC_API_KEYS": API_KEY,
            "MICREC_LOG_LEVEL": "warning",
            **settings,
        }
    )
    env["PYTHONPATH"] = str(source)
    cmd = [sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1"]
    cmd += ["--port", str(port), "--workers", str(a.workers)]
    server = ServerProcess(cmd, env, port, bench.tmp / f"ab-{name}.log", cwd=source)
    server.start()
    stack.callback(server.stop)
    return server


def start_bare(bench: Bench, stack: ExitStack, workers: int) -> ServerProcess:
    port = free_port()
    cmd = [sys.executable, "-m", "uvicorn", "bench.serve_bare:app", "--host", "127.0.0.1"]
    cmd += ["--port", str(port), "--workers", str(workers), "--log-level", "warning"]
    cmd += ["--http", "app.commands.serve:NoDelayHTTPProtocol"]
    env = bench.env({"PYTHONPATH": str(ROOT)})
    server = ServerProcess(cmd, env, port, bench.tmp / "ab-bare.log")
    server.start()
    stack.callback(server.stop)
    return server


def point_row(point: dict[str, Any], group: str, bare_rps: float) -> dict[str, Any]:
    """One variant's numbers at one load point (``Bench.run_point``'s result), its
    throughput also as a share of the bare endpoint's measured right before it."""
    res = point["groups"][group]
    return {
        "rps": res["throughput_rps"],
        "p50_ms": res["p50_ms"],
        "p99_ms": res["p99_ms"],
        "errors": res["errors"],
        "cpu_ms_per_req": point["server_cpu_s"] / max(1, res["count"]) * 1000,
        "x_bare": res["throughput_rps"] / bare_rps,
        "loadavg": point["loadavg_1m_max"],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--variant", action="append", required=True, type=parse_variant)
    ap.add_argument("--bundle", default="artifacts/demo-bundle")
    ap.add_argument("--bundle-padded", default="artifacts/serve-work/bundle-100000")
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[32])
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--window", type=float, default=6.0, help="seconds per variant per round")
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--ready-timeout", type=float, default=900)
    ap.add_argument("--out", default="/tmp/micrec-serve-ab")
    a = ap.parse_args()
    bench = Bench(argparse.Namespace(**vars(a), source_root=None))
    reqs = build_requests(Path(a.bundle), a.items)
    bodies = reqs["bodies"]
    mix = recommend_mix(bodies)
    report: dict[str, Any] = {"command": shlex.join(["python", *sys.argv]), "rounds": []}
    with ExitStack() as stack:
        bare = start_bare(bench, stack, a.workers)
        servers = {v[0]: start_variant(bench, stack, v, a) for v in a.variant}
        bare.wait_ready("/docs", a.workers, 60)
        for name, server in servers.items():
            server.wait_ready("/readyz", a.workers, a.ready_timeout)
            seed_and_warm(server, reqs, a.workers, a.ready_timeout)
            log(f"{name} ready")
        for r in range(a.rounds):
            for c in a.concurrency:
                row: dict[str, Any] = {"round": r, "concurrency": c}
                body = [json.dumps({"user_id": "u1", "domain": "office"})]
                g = {"name": "bare", "tasks": c, "path": "/v1/recommend", "bodies": body}
                p = bench.run_point(bare, {"kind": "bare", "concurrency": c}, [g], a.window)
                row["bare"] = p["groups"]["bare"]["throughput_rps"]
                for name, server in servers.items():
                    g = {"name": "mix", "tasks": c, "path": "/v1/recommend", "bodies": mix}
                    p = bench.run_point(server, {"kind": name, "concurrency": c}, [g], a.window)
                    row[name] = point_row(p, "mix", row["bare"])
                report["rounds"].append(row)
    bench.loadavg.stop()
    report["loadavg_samples"] = bench.loadavg.samples
    Path(a.out).with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    md = markdown(report, [v[0] for v in a.variant], a)
    Path(a.out).with_suffix(".md").write_text(md)
    print(md)
    return 0


def markdown(report: dict[str, Any], names: list[str], a: Any) -> str:
    out = [
        f"Command: `{report['command']}`  ",
        f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; workers {a.workers}; "
        f"{a.rounds} rounds of {a.window:.0f} s per variant; load average (1 min) during the "
        f"run {min(v for _, v in report['loadavg_samples']):.1f}-"
        f"{max(v for _, v in report['loadavg_samples']):.1f}",
        "",
        "Median over rounds (each round: bare, then every variant, back to back):",
        "",
        "| variant | c | rps | x bare | p50 ms | p99 ms | server CPU ms/req | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in a.concurrency:
        rows = [r for r in report["rounds"] if r["concurrency"] == c]
        bare = statistics.median(r["bare"] for r in rows)
        out.append(f"| bare | {c} | {bare:,.0f} | 1 | | | | |")
        for name in names:

            def med(key: str, rows: list[dict[str, Any]] = rows, name: str = name) -> float:
                return statistics.median(r[name][key] for r in rows)

            errors = sum(r[name]["errors"] for r in rows)
            out.append(
                f"| {name} | {c} | {med('rps'):,.0f} | {med('x_bare'):.2f} | "
                f"{med('p50_ms'):.1f} | {med('p99_ms'):.0f} | {med('cpu_ms_per_req'):.2f} | "
                f"{errors} |"
            )
    out += ["", "Every round (x bare):", ""]
    out.append("| round | c | bare rps | " + " | ".join(names) + " |")
    out.append("|---:|---:|---:|" + "---:|" * len(names))
    for r in report["rounds"]:
        cells = " | ".join(f"{r[n]['x_bare']:.2f}" for n in names)
        out.append(f"| {r['round']} | {r['concurrency']} | {r['bare']:,.0f} | {cells} |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.exit(main())
