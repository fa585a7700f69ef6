"""The serving benchmark's targets (the issue's latency, throughput and recall limits),
checked on a finished report, and ``find``, the report's point lookup."""

from __future__ import annotations

from typing import Any

import numpy as np
from serve_common import RECOMMEND_TYPES


def find(report: dict[str, Any], **kw: Any) -> dict[str, Any] | None:
    pts = [p for s in report["services"] for p in s["points"]] + report.get("bare", [])
    for p in pts:
        if all(p.get(k) == v for k, v in kw.items()):
            return p
    return None


def targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets (1e5 items per domain, concurrency 32; 1e6 p99), per worker count."""
    out: list[dict[str, Any]] = []
    workers = sorted({s["workers"] for s in report["services"]})

    def add(name: str, value: float | None, limit: float, unit: str, cond: str, **ctx: Any) -> None:
        if value is None:
            return
        met = value <= limit if cond == "<=" else value >= limit
        out.append(
            {
                "target": name,
                "value": value,
                "limit": limit,
                "unit": unit,
                "op": cond,
                "met": bool(met),
                "margin": value - limit,
                **ctx,
            }
        )

    for w in workers:
        mix = find(
            report,
            kind="service",
            items_per_domain=100_000,
            workers=w,
            scenario="recommend_mix",
            concurrency=32,
        )
        bare = find(report, kind="bare", workers=w, concurrency=32)
        if mix:
            g = mix["groups"]["recommend_mix"]
            add("recommend p99 (1e5, c=32)", g.get("p99_ms"), 50, "ms", "<=", workers=w)
            if bare:
                ratio = g["throughput_rps"] / bare["groups"]["bare"]["throughput_rps"]
                add("recommend throughput / bare (1e5, c=32)", ratio, 0.5, "x", ">=", workers=w)
            fl = report["floors"].get("100000")
            if fl:
                raw = float(np.mean([fl["types"][k]["p50_ms"] for k in RECOMMEND_TYPES]))
                add(
                    "recommend p50 / raw work p50 (1e5, c=32)",
                    g["p50_ms"] / raw,
                    3,
                    "x",
                    "<=",
                    workers=w,
                )
                single = [
                    find(
                        report,
                        kind="service",
                        items_per_domain=100_000,
                        workers=w,
                        scenario=f"single_{k}",
                    )
                    for k in RECOMMEND_TYPES
                ]
                if all(single):
                    s50 = float(
                        np.mean(
                            [
                                p["groups"][k]["p50_ms"]  # type: ignore[index]
                                for p, k in zip(single, RECOMMEND_TYPES, strict=True)
                            ]
                        )
                    )
                    add(
                        "recommend p50 / raw work p50 (1e5, c=1)",
                        s50 / raw,
                        3,
                        "x",
                        "<=",
                        workers=w,
                    )
        for scenario, load in (
            ("reg_under_load", "under c=31 recommend load"),
            ("reg_image_c8", "c=8 registrations"),
        ):
            reg = find(
                report, kind="service", items_per_domain=100_000, workers=w, scenario=scenario
            )
            if reg:
                add(
                    f"text+image registration p99 (1e5, {load})",
                    reg["groups"]["reg_image"].get("p99_ms"),
                    500,
                    "ms",
                    "<=",
                    workers=w,
                )
        big = find(
            report,
            kind="service",
            items_per_domain=1_000_000,
            workers=w,
            scenario="recommend_mix",
            concurrency=32,
        )
        if big:
            add(
                "recommend p99 (1e6, c=32)",
                big["groups"]["recommend_mix"].get("p99_ms"),
                100,
                "ms",
                "<=",
                workers=w,
            )
    fl6 = report["floors"].get("1000000")
    if fl6:
        add(
            "recall@100 vs exact (1e6, serving index)",
            min(fl6["recall_at_100"].values()),
            0.95,
            "",
            ">=",
        )
    return out
