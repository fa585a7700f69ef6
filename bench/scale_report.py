"""Tables and the plot of docs/results/scale.md from the runs it reports: a bench/serve.py
run (the service at each catalogue size, 1 and 2 workers) and a bench/scale_index.py run
(the index and catalogue of one domain up to 1e7 items).

    python bench/scale_report.py --serve docs/results/serve.json [more runs .json] \
        --index docs/results/scale_index.json --out docs/results/scale
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def _worker_rows(mem: dict[str, Any], workers: int) -> list[dict[str, Any]]:
    """The request workers among a server's processes. With 1 worker the `micrec serve`
    process itself serves; with more, uvicorn's supervisor spawns them after the encoder
    process (`micrec serve` starts that first), so they are the spawned processes but the
    lowest pid."""
    rows = mem.get("processes", [])
    if workers == 1:
        return [r for r in rows if "--workers 1" in r["name"]]
    spawned = sorted((r for r in rows if "spawn_main" in r["name"]), key=lambda r: r["pid"])
    return spawned[1:]


def service_rows(serve: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for s in serve["services"]:
        if "error" in s and s.get("ready_s") is None:
            continue
        mem = s.get("memory_end") or s.get("memory_idle") or {}
        p99 = {}
        rps = {}
        for p in s["points"]:
            if p["scenario"] == "recommend_mix":
                g = p["groups"]["recommend_mix"]
                p99[p["concurrency"]] = g.get("p99_ms")
                rps[p["concurrency"]] = g.get("throughput_rps")
        vis = s.get("visibility") or {}
        out.append(
            {
                "n": s["items_per_domain"],
                "workers": s["workers"],
                "ready_s": s.get("ready_s"),
                "rss_mb": mem.get("rss_mb"),
                "pss_mb": mem.get("pss_mb"),
                "uss_mb": mem.get("uss_mb"),
                "worker_uss_mb": [w["uss_mb"] for w in _worker_rows(mem, s["workers"])],
                "worker_rss_mb": [w["rss_mb"] for w in _worker_rows(mem, s["workers"])],
                "worker_pss_mb": [w["pss_mb"] for w in _worker_rows(mem, s["workers"])],
                "worker_smaps": [w.get("smaps") or {} for w in _worker_rows(mem, s["workers"])],
                "loadavg_ready": s.get("loadavg_1m_ready"),
                "loadavg_points": [p.get("loadavg_1m_max") for p in s["points"]],
                "pad_domains": s.get("pad_domains"),
                "p50_ms": {
                    p["concurrency"]: p["groups"]["recommend_mix"].get("p50_ms")
                    for p in s["points"]
                    if p["scenario"] == "recommend_mix"
                },
                "p99_ms": p99,
                "rps": rps,
                "visibility_p50_ms": vis.get("created_to_returned_ms_p50"),
                "visibility_first": vis.get("first_poll_share"),
            }
        )
    return out


def service_markdown(rows: list[dict[str, Any]]) -> str:
    """The service table of scale.md: memory, start-up, latency per size and workers."""

    def f(x: Any, nd: int = 0) -> str:
        return "-" if x is None else f"{x:,.{nd}f}"

    lines = [
        "| items/domain | workers | ready s | all processes RSS / PSS MB | per worker RSS / PSS / USS MB "
        "| rps c=1 / c=32 | p50 / p99 ms c=1 | p50 / p99 ms c=32 | registration -> visible p50 ms |",
        "|---:|---:|---:|---|---|---|---|---|---:|",
    ]
    for r in sorted(rows, key=lambda r: (r["n"], r["workers"])):
        per = " and ".join(
            f"{f(a)} / {f(b)} / {f(c)}"
            for a, b, c in zip(
                r["worker_rss_mb"], r["worker_pss_mb"], r["worker_uss_mb"], strict=True
            )
        )
        lines.append(
            f"| {r['n']:.0e} | {r['workers']} | {f(r['ready_s'])} | {f(r['rss_mb'])} / {f(r['pss_mb'])} "
            f"| {per} | {f(r['rps'].get(1))} / {f(r['rps'].get(32))} "
            f"| {f(r['p50_ms'].get(1), 1)} / {f(r['p99_ms'].get(1), 1)} "
            f"| {f(r['p50_ms'].get(32), 1)} / {f(r['p99_ms'].get(32), 1)} "
            f"| {f(r['visibility_p50_ms'], 1)} |"
        )
    ratios = ["", "| items/domain | 2 workers / 1 worker, RSS | PSS |", "|---:|---:|---:|"]
    for n in sorted({r["n"] for r in rows}):
        one = [r for r in rows if r["n"] == n and r["workers"] == 1]
        two = [r for r in rows if r["n"] == n and r["workers"] == 2]
        if one and two:
            ratios.append(
                f"| {n:.0e} | {two[0]['rss_mb'] / one[0]['rss_mb']:.2f} x "
                f"| {two[0]['pss_mb'] / one[0]['pss_mb']:.2f} x |"
            )
    split = [
        "",
        "Per worker, from `/proc/<pid>/smaps_rollup` (MB): anonymous memory (the worker's own "
        "heap and tensors) apart from file pages (mapped bundle, cache and index files; the "
        "private clean ones are file pages only that worker has read, which the kernel drops "
        "under pressure), and the worker's peak RSS.",
        "",
        "| items/domain | workers | worker | Anonymous | Private_Dirty | Private_Clean | "
        "Pss_Anon | Pss_File | Rss | peak RSS (VmHWM) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in sorted(rows, key=lambda r: (r["n"], r["workers"])):
        for k, sm in enumerate(r.get("worker_smaps") or []):
            if not sm:
                continue
            cells = " | ".join(
                f(sm.get(key))
                for key in (
                    "Anonymous",
                    "Private_Dirty",
                    "Private_Clean",
                    "Pss_Anon",
                    "Pss_File",
                    "Rss",
                    "VmHWM",
                )
            )
            split.append(f"| {r['n']:.0e} | {r['workers']} | {k + 1} | {cells} |")
    return "\n".join(lines + ratios + (split if len(split) > 6 else []))


def plot(rows: list[dict[str, Any]], index: dict[str, Any] | None, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
    for w, style in ((1, "o-"), (2, "s-")):
        rs = sorted((r for r in rows if r["workers"] == w), key=lambda r: r["n"])
        if not rs:
            continue
        ns = [r["n"] for r in rs]
        a.plot(ns, [r["rss_mb"] / 1024 for r in rs], style, label=f"service RSS, {w} worker(s)")
        a.plot(ns, [r["pss_mb"] / 1024 for r in rs], style, alpha=0.5, label=f"PSS, {w}")
        b.plot(ns, [r["p99_ms"].get(32) for r in rs], style, label=f"service p99, c=32, {w}")
    if index:
        runs = sorted(index["runs"], key=lambda r: r["n"])
        ns = [r["n"] for r in runs]
        a.plot(
            ns,
            [r["serving_process"]["rss_mb"] / 1024 for r in runs],
            "^--",
            label="index + catalogue process RSS (1 domain)",
        )
        b.plot(
            ns,
            [r["serving_process"]["search_ms"]["99"] for r in runs],
            "^--",
            label="index search p99, 1 query (1 domain)",
        )
    for ax, title, unit in ((a, "memory", "GB"), (b, "recommend p99", "ms")):
        ax.set_xscale("log")
        ax.set_xlabel("items per domain")
        ax.set_ylabel(unit)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=110)


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--serve", required=True, nargs="+", help="bench/serve.py runs (.json)")
    ap.add_argument("--index")
    ap.add_argument("--out", default="docs/results/scale")
    args = ap.parse_args()
    index = json.loads(Path(args.index).read_text()) if args.index else None
    # a later run's point replaces an earlier run's at the same size and worker count
    by_point = {
        (r["n"], r["workers"]): r
        for f in args.serve
        for r in service_rows(json.loads(Path(f).read_text()))
    }
    rows = list(by_point.values())
    plot(rows, index, Path(args.out))
    print(service_markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
