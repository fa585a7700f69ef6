"""The serving benchmark's results as ``<out>.md`` (tables, targets) and ``<out>.png``
(recommend latency and throughput vs concurrency)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from serve_common import RECOMMEND_TYPES, TYPES, fmt_n
from serve_targets import find


def floor_p50(report: dict[str, Any], n: int, kinds: tuple[str, ...]) -> float | None:
    """Mean p50 (ms) of the work floor over ``kinds`` at ``n`` items, None if not measured."""
    fl = report["floors"].get(str(n))
    if not fl:
        return None
    return float(np.mean([fl["types"][k]["p50_ms"] for k in kinds]))


def _g(p: dict[str, Any] | None, name: str, key: str) -> float | None:
    if p is None:
        return None
    v = p["groups"].get(name, {}).get(key)
    return None if v is None else float(v)


def _f(v: float | None, digits: int = 1) -> str:
    return "-" if v is None else f"{v:,.{digits}f}"


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    sizes = [int(s) for s in report["params"]["sizes"]]
    workers = sorted({s["workers"] for s in report["services"]})
    conc = report["params"]["concurrency"]
    L: list[str] = ["# Service load benchmark (bench/serve.py)", ""]
    L += [
        f"Command: `{report['command']}`  ",
        f"Date: {report['date']} (finished {report.get('finished')}, "
        f"{report.get('duration_min', 0):.1f} min), commit {report['git_commit']}  ",
        f"Machine: {m['cpu_model']}, {m['nproc']} cores, {m['mem_gb']} GB RAM; Python "
        f"{m['python']}, torch {m['torch']}, faiss {m['faiss']}  ",
        f"Load average (1 min) at start {m['loadavg_start'][0]}, during the run mean "
        f"{m.get('loadavg_1m_mean')} / max {m.get('loadavg_1m_max')}  ",
    ]
    if m["other_busy_processes_at_start"]:
        L.append(
            "Other processes using the CPUs when the run started: "
            + "; ".join(f"`{x}`" for x in m["other_busy_processes_at_start"])
            + "  "
        )
    for sup in report.get("supplementary", []):
        sm = sup["machine"]
        L.append(
            f"{sup['what']}: `{sup['command']}`, {sup['date']}, commit {sup['git_commit']}, "
            f"load average mean {sm.get('loadavg_1m_mean')} / max {sm.get('loadavg_1m_max')}  "
        )
    L.append("")
    # single-request table (the issue-4 figure)
    L += ["## Single requests (concurrency 1, 1 worker)", ""]
    L += ["Latency of one request at a time over keep-alive HTTP (p50 / p99 ms).", ""]
    head = "| request | " + " | ".join(f"{fmt_n(n)} items/domain" for n in sizes) + " |"
    L += [head, "|---|" + "---:|" * len(sizes)]
    names = {
        "known": "recommend, known user",
        "inductive": "recommend, inductive (20-item inline history)",
        "cross": "recommend, cross-domain user",
        "reg_text": "register item, text only",
        "reg_image": "register item, text + 512x512 JPEG",
    }
    for kind in TYPES:
        cells = []
        for n in sizes:
            p = find(
                report, kind="service", items_per_domain=n, workers=1, scenario=f"single_{kind}"
            )
            cells.append(f"{_f(_g(p, kind, 'p50_ms'))} / {_f(_g(p, kind, 'p99_ms'))}")
        L.append(f"| {names[kind]} | " + " | ".join(cells) + " |")
    L += [
        "",
        "Raw in-process work for the same requests (p50 ms: embed_user + index search; "
        "registrations: decode + encode + add_item + index upsert):",
        "",
    ]
    L += [head, "|---|" + "---:|" * len(sizes)]
    for kind in TYPES:
        cells = [_f(floor_p50(report, n, (kind,)), 2) for n in sizes]
        L.append(f"| {names[kind]} | " + " | ".join(cells) + " |")
    # targets
    L += ["", "## Targets", ""]
    L += ["| target | workers | value | limit | met | by |", "|---|---:|---:|---:|---|---:|"]
    for t in report.get("targets", []):
        L.append(
            f"| {t['target']} | {t.get('workers', '-')} | {t['value']:.3g} {t['unit']} | "
            f"{t['op']} {t['limit']:g} | {'met' if t['met'] else '**missed**'} | "
            f"{t['margin']:+.3g} |"
        )
    # load sweep
    L += ["", "## Recommend mix vs concurrency", ""]
    L += [
        "Equal shares of known, inductive and cross-domain users, all 3 domains, n=10. "
        "`x bare` = throughput / the bare endpoint's at the same workers and concurrency; "
        "`p50 / raw` = service p50 / raw work p50 (mean of the three types).",
        "",
        "| items/domain | workers | c | rps | p50 ms | p95 ms | p99 ms | errors | x bare | "
        "p50 / raw | server RSS MB | server CPU ms/req | loadgen CPU ms/req | load avg |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n in sizes:
        raw = floor_p50(report, n, RECOMMEND_TYPES)
        for w in workers:
            for c in conc:
                p = find(
                    report,
                    kind="service",
                    items_per_domain=n,
                    workers=w,
                    scenario="recommend_mix",
                    concurrency=c,
                )
                if p is None:
                    continue
                b = find(report, kind="bare", workers=w, concurrency=c)
                rps = _g(p, "recommend_mix", "throughput_rps") or 0.0
                xb = rps / b["groups"]["bare"]["throughput_rps"] if b else None
                p50 = _g(p, "recommend_mix", "p50_ms")
                cnt = max(1, p["total"]["count"])
                L.append(
                    f"| {fmt_n(n)} | {w} | {c} | {rps:,.1f} | {_f(p50)} | "
                    f"{_f(_g(p, 'recommend_mix', 'p95_ms'))} | "
                    f"{_f(_g(p, 'recommend_mix', 'p99_ms'))} | {p['total']['errors']} | "
                    f"{_f(xb, 2)} | {_f(p50 / raw if p50 and raw else None)} | "
                    f"{p['server_rss_mb_max']:,.0f} | {p['server_cpu_s'] / cnt * 1000:.1f} | "
                    f"{p['loadgen_cpu_s'] / cnt * 1000:.1f} | {p['loadavg_1m_max']} |"
                )
    L += ["", "## Bare FastAPI endpoint (framework ceiling)", ""]
    L += [
        "| workers | c | rps | p50 ms | p99 ms | errors | loadgen CPU ms/req |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in report.get("bare", []):
        cnt = max(1, p["total"]["count"])
        L.append(
            f"| {p['workers']} | {p['concurrency']} | {_g(p, 'bare', 'throughput_rps'):,.1f} | "
            f"{_f(_g(p, 'bare', 'p50_ms'), 2)} | {_f(_g(p, 'bare', 'p99_ms'), 2)} | "
            f"{p['total']['errors']} | {p['loadgen_cpu_s'] / cnt * 1000:.2f} |"
        )
    # registrations
    L += ["", "## Registrations", ""]
    L += [
        "| items/domain | workers | scenario | rps | p50 ms | p95 ms | p99 ms | errors |",
        "|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for n in sizes:
        for w in workers:
            for scen, grp in (
                ("reg_text_c8", "reg_text"),
                ("reg_image_c8", "reg_image"),
                ("reg_under_load", "reg_image"),
            ):
                p = find(report, kind="service", items_per_domain=n, workers=w, scenario=scen)
                if p is None:
                    continue
                g = p["groups"][grp]
                label = {
                    "reg_text_c8": "text only, 8 concurrent",
                    "reg_image_c8": "text + image, 8 concurrent",
                    "reg_under_load": "text + image, 1 at a time under 31 recommends",
                }[scen]
                L.append(
                    f"| {fmt_n(n)} | {w} | {label} | {g.get('throughput_rps', 0):.1f} | "
                    f"{_f(g.get('p50_ms'))} | {_f(g.get('p95_ms'))} | {_f(g.get('p99_ms'))} | "
                    f"{g['errors']} |"
                )
    L += ["", "## Registration to visibility", ""]
    L += [
        "Register a text + image item under a category no other item has, then "
        "`POST /v1/recommend` with `history=[new id]`, `category=<that category>`, n=1 on fresh "
        "connections until the new id is returned (`source`: `model` = found by the index "
        "search, `latest` = by the fallback chain). The time includes that filtered "
        "recommend call (`last call ms`).",
        "",
        "| items/domain | workers | returned | on the first recommend | 201 -> returned "
        "p50 / max ms | last call ms p50 | source |",
        "|---:|---:|---:|---:|---:|---:|---|",
    ]
    for s in report["services"]:
        v = s.get("visibility")
        if not v:
            continue
        last = [t["last_recommend_ms"] for t in v.get("trials", []) if t.get("source")]
        L.append(
            f"| {fmt_n(s['items_per_domain'])} | {s['workers']} | {v.get('returned')}/"
            f"{v.get('total')} | {_f((v.get('first_poll_share') or 0) * 100, 0)}% | "
            f"{_f(v.get('created_to_returned_ms_p50'))} / "
            f"{_f(v.get('created_to_returned_ms_max'))} | "
            f"{_f(float(np.median(last)) if last else None)} | "
            f"{', '.join(v.get('sources', []))} |"
        )
    L += ["", "## Start-up, memory and index", ""]
    L += [
        "| items/domain | workers | ready s | RSS idle MB | RSS max MB | RSS / PSS / USS "
        "end MB | index | recall@100 vs exact | raw work process RSS MB |",
        "|---:|---:|---:|---:|---:|---|---|---:|---:|",
    ]
    for s in report["services"]:
        n = s["items_per_domain"]
        if "error" in s:
            L.append(f"| {fmt_n(n)} | {s['workers']} | failed: {s['error'][:200]} | | | | | | |")
            continue
        fl = report["floors"].get(str(n), {"index_kind": {}, "recall_at_100": {}, "rss_mb": 0})
        rss_max = max([p["server_rss_mb_max"] for p in s["points"]] or [0])
        kinds = ", ".join(sorted(set(fl["index_kind"].values())))
        rec = min(fl["recall_at_100"].values()) if fl["recall_at_100"] else None
        m = s.get("memory_end") or {}
        mem = " / ".join(f"{m[k]:,.0f}" for k in ("rss_mb", "pss_mb", "uss_mb") if k in m)
        L.append(
            f"| {fmt_n(n)} | {s['workers']} | {s['ready_s']:.0f} | {s['rss_mb_idle']:,.0f} | "
            f"{rss_max:,.0f} | {mem or '-'} | {kinds} | {_f(rec, 3)} | {fl['rss_mb']:,.0f} |"
        )
    L += [
        "",
        "Index options at each size (one domain, k=10 single-query search, 1 thread, "
        "recall@100 vs exact on the benchmark's user vectors):",
        "",
    ]
    L += ["| items/domain | index | search ms | recall@100 |", "|---:|---|---:|---:|"]
    for n in sizes:
        for o in report["floors"].get(str(n), {}).get("index_options", []):
            L.append(
                f"| {fmt_n(n)} | {o['index']} | {o['search_ms']:.2f} | {o['recall_at_100']:.3f} |"
            )
    L += [
        "",
        "Per-point details (every group's latency percentiles, CPU seconds, load "
        "average) are in serve.json.",
        "",
    ]
    return "\n".join(L) + "\n"


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    sizes = [int(s) for s in report["params"]["sizes"]]
    workers = sorted({s["workers"] for s in report["services"]})
    conc = report["params"]["concurrency"]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, n in enumerate(sizes):
        for w in workers:
            pts = [
                find(
                    report,
                    kind="service",
                    items_per_domain=n,
                    workers=w,
                    scenario="recommend_mix",
                    concurrency=c,
                )
                for c in conc
            ]
            cs = [c for c, p in zip(conc, pts, strict=True) if p]
            ps = [p for p in pts if p]
            if not ps:
                continue
            style = "-" if w == 1 else "--"
            label = f"{fmt_n(n)} items, {w} worker{'s' if w > 1 else ''}"
            g = [p["groups"]["recommend_mix"] for p in ps]
            axes[0].plot(
                cs, [x.get("p50_ms") for x in g], style, marker="o", color=colors[i], label=label
            )
            axes[1].plot(
                cs, [x.get("p99_ms") for x in g], style, marker="o", color=colors[i], label=label
            )
            axes[2].plot(
                cs,
                [x.get("throughput_rps") for x in g],
                style,
                marker="o",
                color=colors[i],
                label=label,
            )
    for w in workers:
        bs = [find(report, kind="bare", workers=w, concurrency=c) for c in conc]
        cs = [c for c, p in zip(conc, bs, strict=True) if p]
        if cs:
            axes[2].plot(
                cs,
                [p["groups"]["bare"]["throughput_rps"] for p in bs if p],
                "-" if w == 1 else "--",
                color="gray",
                marker="s",
                label=f"bare endpoint, {w} worker{'s' if w > 1 else ''}",
            )
    axes[1].axhline(50, color="red", lw=0.8, ls=":", label="target 1e5 (50 ms)")
    axes[1].axhline(100, color="darkred", lw=0.8, ls=":", label="target 1e6 (100 ms)")
    for ax, title, ylabel in (
        (axes[0], "recommend p50 latency", "ms"),
        (axes[1], "recommend p99 latency", "ms"),
        (axes[2], "throughput", "requests / s"),
    ):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xticks(conc)
        ax.set_xticklabels([str(c) for c in conc])
        ax.set_xlabel("concurrency (closed loop)")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    axes[2].legend(fontsize=7)
    axes[1].legend(fontsize=7)
    m = report["machine"]
    fig.suptitle(
        f"MICRec service, recommend mix (known / inductive / cross-domain), {m['nproc']} cores "
        f"{m['cpu_model']}, {report['date'][:10]}, load avg max {m.get('loadavg_1m_max')}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
