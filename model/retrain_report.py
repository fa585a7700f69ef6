"""The retrain report written into the candidate bundle: ``retrain-report.json`` (everything),
``retrain-report.md`` (the gate, the window, candidate vs current per domain and slice) and
``retrain-report.png`` (the gate metric per slice, one panel per domain)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from model.reporting import markdown_table

REPORT = "retrain-report"


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.2f}"


def _decided(g: dict[str, Any], w: dict[str, Any]) -> str:
    """Who decided: the users paired by the gate and the window's counts per domain."""
    rule = (
        f"- decided by {g.get('users', 0)} users (min_users {g.get('min_users', 'n/a')}, "
        f"margin {g.get('margin', 0):g}, confidence {g.get('confidence', 'n/a')})"
    )
    parts = []
    for d, c in (w.get("scored") or {}).items():
        parts.append(
            f"{d}: {c['old_users']} returning users ({c['old_targets']} target rows, "
            f"pre-window history as input), {c['new_users']} window-only users "
            f"({c['new_inputs']} input + {c['new_targets']} target rows), "
            f"{c['left_out_users']} left out with < {w.get('min_user_rows', 2)} items "
            f"({c['left_out_rows']} rows)"
        )
    return rule + ("; " + "; ".join(parts) if parts else "")


def markdown(report: dict[str, Any], seconds: dict[str, float]) -> str:
    g, w = report["gate"], report["window"]
    verdict = "**promote**" if g["promote"] else "**refuse**"
    dropped = w.get("rows_dropped_bad_timestamp", 0)  # app/learning/export.py
    lines = [
        f"# Retrain report: {verdict}",
        "",
        f"- gate: {g['reason']}",
        f"- metric: {g['metric']} of slice `{g['slice']}`, user-weighted over domains; "
        f"candidate {_pct(g['candidate'])} %, current {_pct(g['current'])} % "
        f"(tolerance {g['tolerance']:g})",
        _decided(g, w),
        f"- current: {report['current_version']} ({report['current_model_version']}); "
        f"candidate {report['candidate_model_version']}",
        f"- window: rows with timestamp > {w['cutoff']} ({w['spec']}): {w['window_rows']} "
        f"rows held out, {w['train_rows']} trained on; targets per domain {w['targets']}"
        + (f"; {dropped} stored rows left out for out-of-range timestamps" if dropped else ""),
        f"- training: epochs {report['config']['epochs']}, tune {report['config']['tune']}, "
        f"world size {report['config']['world_size']}",
        "- seconds per stage: " + ", ".join(f"{k} {v:.1f}" for k, v in seconds.items()),
        "",
        "Both models are scored on the same window by `model.evaluation.evaluate` "
        "(model/retrain.py). Values in %.",
    ]
    results = report["results"]
    for d in results["candidate"]:
        lines.append(markdown_table(results, d, metrics=(g["metric"], "recall@20")))
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = report["gate"]["metric"]
    results = report["results"]
    domains = list(results["candidate"])
    fig, axes = plt.subplots(len(domains), 1, figsize=(10, 2.8 * len(domains)), squeeze=False)
    for ax, d in zip(axes[:, 0], domains, strict=True):
        slices = list(results["candidate"][d])
        x = np.arange(len(slices))
        for k, name in enumerate(("current", "candidate")):
            vals = [results[name][d][s].get(metric) for s in slices]
            ax.bar(x + 0.4 * k, [100 * v if v is not None else 0 for v in vals], 0.4, label=name)
        ax.set_xticks(x + 0.2)
        ax.set_xticklabels(slices, rotation=30, ha="right", fontsize=7)
        ax.set_ylabel(f"{metric} (%)")
        ax.set_title(f"{d}: window evaluation", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_report(bundle_dir: Path, report: dict[str, Any], seconds: dict[str, float]) -> Path:
    """Write the three files into ``bundle_dir`` (extra files: the bundle still verifies)."""
    bundle_dir = Path(bundle_dir)
    doc = {**report, "seconds": seconds}
    (bundle_dir / f"{REPORT}.json").write_text(json.dumps(doc, indent=1, default=float))
    (bundle_dir / f"{REPORT}.md").write_text(markdown(report, seconds))
    plot(report, bundle_dir / f"{REPORT}.png")
    return bundle_dir / f"{REPORT}.md"
