"""Result tables (markdown) and per-slice bar charts for evaluation output.

``results`` everywhere is {method: {domain: {slice: {"recall@20": ..., "ndcg@20": ...}}}},
metric values are fractions (printed in %) or None for n/a. The ``all`` slice also
carries coverage@K and long_tail@K (:func:`coverage_table`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

Results = dict[str, dict[str, dict[str, dict[str, Any]]]]


def _fmt(v: Any, spread: Any = None) -> str:
    if v is None:
        return "n/a"
    s = f"{100 * v:.2f}"
    return s + (f" ± {100 * spread:.2f}" if spread is not None else "")


def markdown_table(
    results: Results,
    domain: str,
    metrics: Sequence[str] = ("ndcg@20", "recall@20"),
    spreads: Results | None = None,
) -> str:
    methods = list(results)
    slices = list(next(iter(results.values()))[domain])
    lines = []
    for metric in metrics:
        lines.append(f"\n**{domain}: {metric} (%)**\n")
        lines.append("| slice | users | " + " | ".join(methods) + " |")
        lines.append("|---|---|" + "---|" * len(methods))
        for s in slices:
            n = results[methods[0]][domain][s].get("n_users")
            cells = []
            for m in methods:
                v = results[m][domain].get(s, {}).get(metric)
                sp = spreads[m][domain].get(s, {}).get(metric) if spreads else None
                cells.append(_fmt(v, sp))
            lines.append(f"| {s} | {int(n) if n is not None else ''} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def coverage_table(
    results: Results, domain: str, k: int = 20, spreads: Results | None = None
) -> str:
    """One row per method: catalogue coverage@k and long-tail share@k of the ``all`` slice
    (definitions: model.evaluation), with NDCG@k beside them for the trade-off."""
    metrics = (f"coverage@{k}", f"long_tail@{k}", f"ndcg@{k}")
    lines = [
        f"\n**{domain}: catalogue coverage (%, slice all)**\n",
        "| method | " + " | ".join(metrics) + " |",
        "|---|" + "---|" * len(metrics),
    ]
    for m, per_domain in results.items():
        row = per_domain[domain].get("all", {})
        sp = spreads[m][domain].get("all", {}) if spreads else {}
        lines.append(f"| {m} | " + " | ".join(_fmt(row.get(x), sp.get(x)) for x in metrics) + " |")
    return "\n".join(lines) + "\n"


def bar_chart(
    results: Results, domain: str, path: Path, metric: str = "ndcg@20", title: str | None = None
) -> Path:
    """Grouped bars: one group per slice, one bar per method (n/a slices left empty)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(results)
    slices = list(next(iter(results.values()))[domain])
    x = np.arange(len(slices))
    w = 0.8 / max(1, len(methods))
    fig, ax = plt.subplots(figsize=(max(8, len(slices) * 0.9), 4))
    for k, m in enumerate(methods):
        vals = [results[m][domain].get(s, {}).get(metric) for s in slices]
        ax.bar(x + k * w, [100 * v if v is not None else 0 for v in vals], w, label=m)
    ax.set_xticks(x + w * (len(methods) - 1) / 2)
    ax.set_xticklabels(slices, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(f"{metric} (%)")
    ax.set_title(title or f"{domain}: {metric} per slice")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


TARGET_SLICES = (
    "all",
    "new_users",
    "new_items",
    "cold_items",
    "cold_items_vs_all",
    "cd_cold_users",
    "deg_1-5",
    "deg_6-20",
)
BASELINES = ("popular", "content-knn", "inmo")


def targets_table(
    mean: Results,
    std: Results,
    domain: str,
    method: str = "micrec",
    baselines: Sequence[str] = BASELINES,
    k: int = 20,
) -> str:
    """``method`` against the best of ``baselines`` per slice (NDCG@k, %): the ratio, and
    whether the mean reaches the best baseline's mean minus one seed standard deviation of
    ``method`` (the quality issue's acceptance rule). Slices a baseline cannot serve, or
    that are n/a for ``method``, are marked n/a."""
    metric = f"ndcg@{k}"
    present = [b for b in baselines if b in mean]
    lines = [
        f"\n**{domain}: {method} vs the best of {', '.join(present)} (NDCG@{k} %)**\n",
        f"| slice | {method} | best baseline | ratio | met (mean >= best - 1 std) |",
        "|---|---|---|---|---|",
    ]
    for s in TARGET_SLICES:
        v = mean.get(method, {}).get(domain, {}).get(s, {}).get(metric)
        sd = std.get(method, {}).get(domain, {}).get(s, {}).get(metric) or 0.0
        cands = [
            (b, x)
            for b in present
            if (x := mean[b].get(domain, {}).get(s, {}).get(metric)) is not None
        ]
        if v is None or not cands:
            lines.append(f"| {s} | n/a | n/a | n/a | n/a |")
            continue
        b, x = max(cands, key=lambda c: c[1])
        ratio = f"{v / x:.2f}" if x > 0 else "n/a"
        met = "yes" if v >= x - sd else "**no**"
        lines.append(f"| {s} | {_fmt(v, sd or None)} | {b} {100 * x:.2f} | {ratio} | {met} |")
    return "\n".join(lines) + "\n"
