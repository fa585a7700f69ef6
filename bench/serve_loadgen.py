"""Closed-loop HTTP load generator for bench/serve.py (runs in its own process).

    python bench/serve_loadgen.py SPEC.json OUT.json

SPEC: ``{"base_url", "duration_s", "warmup_s", "timeout_s", "headers", "groups": [...]}``.
Each group is ``{"name", "tasks", "method", "path", "bodies": [...], "id_prefix"?,
"content_type"?}``: ``tasks`` coroutines each send one request, wait for the whole
response, then send the next (closed loop), cycling through ``bodies`` (strings; in a body
the token ``__ID__`` is replaced by a fresh unique id, for item registration). All groups
run at the same time for ``warmup_s + duration_s``; only requests that start after the
warm-up and finish inside the window are counted. Connections are kept alive (aiohttp,
one pool for all tasks, at most one connection per task).

OUT: per group the count, errors (status >= 400 or exceptions, first messages kept),
throughput (completed requests / window) and latency percentiles in milliseconds, plus the
generator's own CPU seconds (it shares the machine with the server).
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np


def summarise(lat_s: list[float], window_s: float) -> dict[str, Any]:
    if not lat_s:
        return {"count": 0, "throughput_rps": 0.0}
    ms = np.asarray(lat_s) * 1000.0
    return {
        "count": len(ms),
        "throughput_rps": len(ms) / window_s,
        "mean_ms": float(ms.mean()),
        "p50_ms": float(np.percentile(ms, 50)),
        "p95_ms": float(np.percentile(ms, 95)),
        "p99_ms": float(np.percentile(ms, 99)),
        "max_ms": float(ms.max()),
    }


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    base = spec["base_url"].rstrip("/")
    warmup = float(spec.get("warmup_s", 1.0))
    duration = float(spec["duration_s"])
    headers = dict(spec.get("headers", {}))
    total_tasks = sum(int(g["tasks"]) for g in spec["groups"])
    connector = aiohttp.TCPConnector(limit=total_tasks, force_close=False)
    timeout = aiohttp.ClientTimeout(total=float(spec.get("timeout_s", 30.0)))
    results: dict[str, dict[str, Any]] = {}
    counter = 0
    start = time.perf_counter()
    measure_from = start + warmup
    stop_at = measure_from + duration

    async def worker(session: aiohttp.ClientSession, group: dict[str, Any], k: int) -> None:
        nonlocal counter
        res = results[group["name"]]
        bodies = group["bodies"]
        url = base + group["path"]
        method = group.get("method", "POST")
        h = {**headers, "Content-Type": group.get("content_type", "application/json")}
        i = k  # tasks start at different bodies
        while True:
            t0 = time.perf_counter()
            if t0 >= stop_at:
                return
            body = bodies[i % len(bodies)]
            i += 1
            if "__ID__" in body:
                counter += 1
                body = body.replace("__ID__", f"{group.get('id_prefix', 'x')}-{counter}")
            status = 0
            err = None
            try:
                async with session.request(method, url, data=body.encode(), headers=h) as r:
                    payload = await r.read()
                    status = r.status
                    if status >= 400:
                        err = f"{status}: {payload[:200].decode(errors='replace')}"
            except Exception as e:  # counted as an error; the loop goes on
                err = f"{type(e).__name__}: {e}"
            t1 = time.perf_counter()
            if t0 >= measure_from and t1 <= stop_at:
                if err is None:
                    res["lat"].append(t1 - t0)
                else:
                    res["errors"] += 1
                    if len(res["error_samples"]) < 5:
                        res["error_samples"].append(err)
            elif err is not None and t0 < measure_from:
                res["warmup_errors"] += 1

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        tasks = []
        for g in spec["groups"]:
            results[g["name"]] = {"lat": [], "errors": 0, "error_samples": [], "warmup_errors": 0}
            tasks += [asyncio.create_task(worker(session, g, k)) for k in range(int(g["tasks"]))]
        await asyncio.gather(*tasks)
    out: dict[str, Any] = {"window_s": duration, "groups": {}}
    for g in spec["groups"]:
        res = results[g["name"]]
        out["groups"][g["name"]] = {
            "tasks": int(g["tasks"]),
            "errors": res["errors"],
            "warmup_errors": res["warmup_errors"],
            "error_samples": res["error_samples"],
            **summarise(res["lat"], duration),
        }
    return out


def main(argv: list[str]) -> int:
    spec = json.loads(Path(argv[0]).read_text())
    out = asyncio.run(run(spec))
    ru = resource.getrusage(resource.RUSAGE_SELF)
    out["loadgen_cpu_s"] = ru.ru_utime + ru.ru_stime
    Path(argv[1]).write_text(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
