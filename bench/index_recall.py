"""IVF vs exact search for DomainIndex (app/index/domain.py): recall@k and latency by catalogue size.

    python bench/index_recall.py                       # 1e4, 1e5, 1e6 items, d=64, 2 threads
    python bench/index_recall.py --sizes 10000 --quick # smoke run

For each size and data distribution it builds the exact index (IndexFlatIP) and the IVF
index with the service defaults (nlist ~ 4*sqrt(n), 64 training points per list, 10 k-means
iterations), then reports for exact and for IVF at several nprobe values:

* recall@k of IVF against the exact top-k (same formula as app.index.domain.measure_recall),
* single-query latency p50/p95 (what one /recommend call pays, Python result conversion
  included) and batch throughput,
* build time (IVF: k-means training + assignment of every vector),
* the service's build (``ivf calibrated``): nprobe raised from 32 until recall@k on a
  calibration sample of the queries reaches the target, and the recall that nprobe gets
  on the held-out queries.

Data: ``clustered`` = unit vectors around 1000 random centres with noise of the same norm
as the centres (overlapping clusters, closer to real embeddings); ``clustered-norms`` = the
same directions with norms spread uniformly over 0.2..3 (like trained item vectors, which
are not unit length); ``random`` = i.i.d. Gaussian unit vectors, the worst case for any
partition-based index.

Writes <out>.json (everything, with the command, machine and date) and <out>.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from machine import cpu_model

from app.index.domain import DomainIndex, default_nlist


def unit(x: np.ndarray) -> np.ndarray:
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def make_data(
    kind: str, n: int, n_queries: int, d: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    if kind == "random":
        x = unit(rng.standard_normal((n + n_queries, d), dtype=np.float32))
    elif kind == "clustered":
        centers = unit(rng.standard_normal((1000, d), dtype=np.float32))
        x = centers[rng.integers(0, len(centers), n + n_queries)]
        x += rng.standard_normal(x.shape, dtype=np.float32) / np.float32(np.sqrt(d))
        x = unit(x)
    elif kind == "clustered-norms":
        x, q = make_data("clustered", n, n_queries, d, seed)
        x *= rng.uniform(0.2, 3.0, (n, 1)).astype(np.float32)
        return x, q
    else:
        raise ValueError(kind)
    # Queries are drawn from the same distribution but are not catalogue items.
    return np.ascontiguousarray(x[:n]), np.ascontiguousarray(x[n:])


def latency(index: DomainIndex, q: np.ndarray, args: argparse.Namespace) -> dict[str, float]:
    """Single-query latency at each of ``args.latency_threads`` FAISS thread counts, and
    batch throughput at ``args.threads``."""
    out: dict[str, float] = {}
    for threads in args.latency_threads:
        index.threads = threads
        index.search(q[:8], args.k)  # warm-up (page in, OpenMP pool)
        times = []
        for row in q[: args.single_queries]:
            t = time.perf_counter()
            index.search(row[None, :], args.k)
            times.append(time.perf_counter() - t)
        ms = np.array(times) * 1000
        out[f"p50_ms_{threads}t"] = float(np.percentile(ms, 50))
        out[f"p95_ms_{threads}t"] = float(np.percentile(ms, 95))
    index.threads = args.threads
    t = time.perf_counter()
    index.search(q, args.k)
    out["batch_qps"] = float(len(q) / (time.perf_counter() - t))
    return out


def recall(truth: list[list[tuple[str, float]]], got: list[list[tuple[str, float]]]) -> float:
    hits = sum(
        len({i for i, _ in t}.intersection(i for i, _ in g))
        for t, g in zip(truth, got, strict=True)
    )
    return hits / sum(len(t) for t in truth)


def run_one(data: str, n: int, args: argparse.Namespace, log: Any) -> list[dict[str, Any]]:
    x, q = make_data(data, n, args.queries, args.dim, seed=args.seed)
    ids = [f"i{j}" for j in range(n)]
    rows: list[dict[str, Any]] = []

    exact = DomainIndex("bench", args.dim, exact_max_items=n, threads=args.threads)
    t = time.perf_counter()
    exact.build(ids, x)
    build_exact = time.perf_counter() - t
    truth = exact.search(q, args.k)
    row = {"n": n, "data": data, "kind": "flat", "nlist": None, "nprobe": None}
    row |= {"recall_at_k": 1.0, "build_s": build_exact}
    row |= latency(exact, q, args)
    rows.append(row)
    log(row)
    del exact

    ivf = DomainIndex(
        "bench", args.dim, exact_max_items=0, threads=args.threads, ivf_target_recall=None
    )
    t = time.perf_counter()
    ivf.build(ids, x)
    build_ivf = time.perf_counter() - t
    nlist = default_nlist(n)
    for nprobe in args.nprobes:
        if nprobe > nlist:
            continue
        ivf.set_nprobe(nprobe)
        row = {"n": n, "data": data, "kind": "ivf", "nlist": nlist, "nprobe": nprobe}
        row |= {"recall_at_k": recall(truth, ivf.search(q, args.k)), "build_s": build_ivf}
        row |= latency(ivf, q, args)
        rows.append(row)
        log(row)
    del ivf

    # The service's build: nprobe calibrated on a sample of the queries (there: real
    # users), judged on the other, held-out queries; exact when IVF would scan most lists.
    cal_q, held_q = q[: args.calibration_queries], q[args.calibration_queries :]
    served = DomainIndex(
        "bench",
        args.dim,
        exact_max_items=0,
        threads=args.threads,
        ivf_target_recall=args.target_recall,
    )
    t = time.perf_counter()
    served.build(ids, x, queries=cal_q)
    build_served = time.perf_counter() - t
    cal = served.calibration
    assert cal is not None
    kind = "exact (calibrated)" if cal.exact_instead else "ivf (calibrated)"
    row = {"n": n, "data": data, "kind": kind, "nlist": nlist, "nprobe": cal.nprobe}
    held_truth = truth[args.calibration_queries :]
    row |= {"recall_at_k": recall(held_truth, served.search(held_q, args.k))}
    row |= {"build_s": build_served, "calibration_recall": cal.recall}
    row |= {"calibration_s": cal.seconds}
    row |= latency(served, held_q, args)
    rows.append(row)
    log(row)
    return rows


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    p = report["params"]
    lines = [
        "# DomainIndex: IVF recall and latency vs exact search",
        "",
        f"Command: `{report['command']}`  ",
        f"Date: {report['date']}  ",
        f"Machine: {m['cpu_model']}, nproc={m['nproc']}, FAISS threads={p['threads']}, "
        f"load average at start/end {m['loadavg_start']} / {m['loadavg_end']}  ",
        f"faiss {m['faiss']}, numpy {m['numpy']}, Python {m['python']}",
        "",
        f"d={p['dim']}, k={p['k']}, {p['queries']} queries for recall and batch throughput, "
        f"{p['single_queries']} single-query searches for latency (at each FAISS thread "
        "count). IVF defaults: "
        "nlist = 4*sqrt(n), 64 training points per list, 10 k-means iterations; the "
        "service default nprobe is 32. Recall@k is against the exact top-k. "
        f"`(calibrated)` = the service's build: nprobe doubled from 32 until recall@{p['k']} "
        f"on {p['calibration_queries']} of the queries reaches {p['target_recall']} (exact "
        "search instead when that takes more than half of the lists; nprobe = what the "
        "target needed), recall then measured on the other queries; build s includes the "
        "calibration.",
        "",
        "| data | n | index | nlist | nprobe | recall@k | "
        + " | ".join(f"p50 / p95 ms ({t} thr)" for t in p["latency_threads"])
        + f" | batch q/s ({p['threads']} thr) | build s |",
        "|---|---:|---|---:|---:|---:|" + "---:|" * (len(p["latency_threads"]) + 2),
    ]
    for r in report["results"]:
        lat = " | ".join(
            f"{r[f'p50_ms_{t}t']:.2f} / {r[f'p95_ms_{t}t']:.2f}" for t in p["latency_threads"]
        )
        lines.append(
            f"| {r['data']} | {r['n']:,} | {r['kind']} | {r['nlist'] or '-'} | "
            f"{r['nprobe'] or '-'} | {r['recall_at_k']:.4f} | {lat} | {r['batch_qps']:,.0f} | "
            f"{r['build_s']:.1f} |"
        )
    lines += ["", "Latency includes the Python wrapper (validation, id mapping, result lists)."]
    if any(v > m["nproc"] for v in (m["loadavg_start"], m["loadavg_end"])):
        lines.append(
            "The machine was shared with other jobs during the run (load average above "
            "nproc): absolute latencies are pessimistic; the exact/IVF ratios are the signal."
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--data", nargs="+", default=["clustered", "clustered-norms", "random"])
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2, help="FAISS threads (build, batch)")
    ap.add_argument("--latency-threads", type=int, nargs="+", default=[2, 1])
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument(
        "--calibration-queries", type=int, default=200, help="of --queries, for calibration"
    )
    ap.add_argument("--target-recall", type=float, default=0.95)
    ap.add_argument("--single-queries", type=int, default=200)
    ap.add_argument("--nprobes", type=int, nargs="+", default=[8, 16, 32, 64, 128])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="docs/results/index_recall")
    ap.add_argument("--quick", action="store_true", help="few queries (smoke test)")
    args = ap.parse_args(argv)
    if args.quick:
        args.queries, args.single_queries, args.calibration_queries = 50, 20, 20

    def log(row: dict[str, Any]) -> None:
        print(json.dumps(row), file=sys.stderr, flush=True)

    argv_used = sys.argv[1:] if argv is None else argv
    report: dict[str, Any] = {
        "command": shlex.join(["python", "bench/index_recall.py", *argv_used]),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {
            "nproc": os.cpu_count(),
            "cpu_model": cpu_model(),
            "loadavg_start": round(os.getloadavg()[0], 1),
            "python": platform.python_version(),
            "faiss": faiss.__version__,
            "numpy": np.__version__,
        },
        "params": {k: v for k, v in vars(args).items() if k != "out"},
        "results": [],
    }
    for n in args.sizes:
        for data in args.data:
            report["results"] += run_one(data, n, args, log)
    report["machine"]["loadavg_end"] = round(os.getloadavg()[0], 1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
