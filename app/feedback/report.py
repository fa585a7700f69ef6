"""The online metrics of a bundle version for the retrain report (app/learning/
retrain_run.py): how the version serving now did with users, next to the offline gate's
verdict on its candidate. Read from the store's shared counters; a store that cannot be
read leaves the section out with the reason, it never fails a retrain."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from typing import Any

from app.feedback.metrics import OnlineMetrics, summarise
from app.store.base import Store, StoreUnavailable


def online_report(store: Store, model_version: str, positive: Collection[str]) -> dict[str, Any]:
    """``{"model_version", "domains": {domain: metrics as JSON}}``, or ``{"error"}``."""
    try:
        pairs = [(v, d) for v, d in store.online_versions() if v == model_version]
        metrics = [summarise(store.online_counts(v, d), positive) for v, d in pairs]
    except StoreUnavailable as err:
        return {"model_version": model_version, "error": f"store unavailable: {err}"}
    return {
        "model_version": model_version,
        "domains": {m.domain: dataclasses.asdict(m) for m in metrics},
    }


def online_markdown(report: dict[str, Any]) -> str:
    """The report's section (appended to retrain-report.md)."""
    lines = [
        "",
        f"## Online metrics of the current version ({report['model_version']})",
        "",
    ]
    if "error" in report:
        return "\n".join([*lines, f"Not read: {report['error']}.", ""])
    domains: dict[str, dict[str, Any]] = report["domains"]
    if not domains:
        return "\n".join([*lines, "No recommendations of this version were recorded.", ""])
    lines += [
        "From the feedback on the lists it served (app/feedback/metrics.py); 95 % intervals.",
        "",
        "| domain | lists | with feedback | CTR | hit rate | MRR | coverage |",
        "|---|---:|---:|---|---|---|---:|",
    ]
    for domain, m in sorted(domains.items()):
        lines.append(_row(domain, OnlineMetrics(**m)))
    return "\n".join([*lines, ""])


def _row(domain: str, m: OnlineMetrics) -> str:
    def pct(x: float, ci: tuple[float, float]) -> str:
        return f"{100 * x:.1f} % [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"

    mrr = f"{m.mrr:.3f} [{m.mrr_ci[0]:.3f}, {m.mrr_ci[1]:.3f}]"
    return (
        f"| {domain} | {m.recommendations} | {m.observed} | {pct(m.ctr, m.ctr_ci)} | "
        f"{pct(m.hit_rate, m.hit_rate_ci)} | {mrr} | {100 * m.coverage:.1f} % |"
    )
