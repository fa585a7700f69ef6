"""The served ``micrec`` of two sets of bench/quality.py runs, seed by seed, against the
baselines of a reference run: test NDCG@20 per domain and slice, means and ratios.

    python bench/quality_compare.py \
        --before docs/results/quality/2026-12-06-decay384/arts-office-office10/results.json \
        --after docs/results/quality/2026-12-06-refit/office10-s0/results.json \
                docs/results/quality/2026-12-06-refit/office10-s1/results.json \
        --baselines docs/results/quality/2026-12-06-decay384/arts-office-office10/results.json

Each file may hold any seeds (``seeds`` in results.json); only the seeds that ``--after``
ran are compared, and a seed missing from ``--before`` or ``--baselines`` is an error
(the same split per seed is what makes the rows comparable). Also prints which trial the
search chose per seed of ``--before`` and ``--after`` (its number, content, alignment, lr, item map).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

SLICES = ("all", "new_users", "cd_cold_users", "cold_items", "cold_items_vs_all", "deg_1-5")
BASELINES = ("popular", "content-knn", "inmo")


def by_seed(files: list[Path]) -> dict[int, dict[str, Any]]:
    """{seed: {"per_seed": {method: result}, "train": {method: info}}} over ``files``."""
    out: dict[int, dict[str, Any]] = {}
    for f in files:
        run = json.loads(f.read_text())
        for i, seed in enumerate(run["seeds"]):
            slot = out.setdefault(seed, {"per_seed": {}, "train": {}})
            for m, rows in run.get("per_seed", {}).items():
                if len(rows) > i:
                    slot["per_seed"][m] = rows[i]
                    infos = run.get("train", {}).get(m, [])
                    slot["train"][m] = infos[i] if len(infos) > i else {}
    return out


def combine(
    files: list[Path], seeds: list[int], methods: list[str], config: dict[str, Any]
) -> tuple[dict[str, list[Any]], dict[str, list[Any]]]:
    """(per_seed, train) of bench/quality.py for ``seeds`` in that order, taken from runs
    made in separate processes; ValueError (one line) if a file was run with another
    configuration than ``config`` (its data, model and blend settings: a table of runs of
    other settings would compare nothing) or no file holds a (method, seed)."""
    ours = json.loads(json.dumps(config))
    for f in files:
        theirs = json.loads(f.read_text()).get("meta", {}).get("config")
        if theirs is not None and theirs != ours:
            raise ValueError(f"{f} was run with another configuration than this command's")
    runs = by_seed(files)
    missing = [
        (m, s) for s in seeds for m in methods if m not in runs.get(s, {}).get("per_seed", {})
    ]
    if missing:
        raise ValueError(f"no run of (method, seed) {missing} in the files given")
    per_seed = {m: [runs[s]["per_seed"][m] for s in seeds] for m in methods}
    train = {m: [runs[s]["train"].get(m, {}) for s in seeds] for m in methods}
    return per_seed, train


def ndcg(result: dict[str, Any], domain: str, slice_name: str) -> float | None:
    v = result.get(domain, {}).get(slice_name, {}).get("ndcg@20")
    return None if v is None else 100.0 * v


def mean(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept and len(kept) == len(values) else None


def fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f}"


def ratio(a: float | None, b: float | None) -> str:
    return "n/a" if a is None or not b else f"{a / b:.2f}"


def table(
    before: dict[int, dict[str, Any]],
    after: dict[int, dict[str, Any]],
    base: dict[int, dict[str, Any]],
    seeds: list[int],
) -> list[str]:
    domains = sorted(after[seeds[0]]["per_seed"]["micrec"])
    methods = [m for m in BASELINES if all(m in base[s]["per_seed"] for s in seeds)]
    head = "| domain | slice | before | after | after / before | " + " | ".join(methods)
    head += " | " + " | ".join(f"after / {m}" for m in methods) + " |"
    lines = [head, "|" + "---|" * (5 + 2 * len(methods))]
    for d in domains:
        for s in SLICES:
            b = mean([ndcg(before[k]["per_seed"]["micrec"], d, s) for k in seeds])
            a = mean([ndcg(after[k]["per_seed"]["micrec"], d, s) for k in seeds])
            refs = [mean([ndcg(base[k]["per_seed"][m], d, s) for k in seeds]) for m in methods]
            cells = [d, s, fmt(b), fmt(a), ratio(a, b), *map(fmt, refs)]
            cells += [ratio(a, r) for r in refs]
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def chosen(run: dict[str, Any]) -> str:
    """The search's chosen trial (highest objective): its number and parts."""
    trials = [
        t
        for t in run["train"].get("micrec", {}).get("tuning_trials") or []
        if t.get("objective") is not None
    ]
    if not trials:
        return "no search recorded"
    t = max(trials, key=lambda t: t["objective"])
    p = t["params"]
    return (
        f"trial {t['number']} (content {p.get('content')}, alignment {p.get('cross_domain')}"
        f", lr {p.get('lr', 0):.4g}, item map {p.get('item_map')})"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--before", type=Path, nargs="+", required=True)
    ap.add_argument("--after", type=Path, nargs="+", required=True)
    ap.add_argument("--baselines", type=Path, nargs="+", required=True)
    args = ap.parse_args(argv)
    before, after, base = by_seed(args.before), by_seed(args.after), by_seed(args.baselines)
    seeds = sorted(s for s, r in after.items() if "micrec" in r["per_seed"])
    if not seeds:
        ap.error("--after holds no micrec run")
    for name, runs in (("--before", before), ("--baselines", base)):
        missing = [s for s in seeds if s not in runs]
        if missing:
            ap.error(f"{name} has no run for seeds {missing}")
    print(f"Seeds {seeds}; test NDCG@20 (%), mean over the seeds.\n")
    print("\n".join(table(before, after, base, seeds)))
    print()
    for s in seeds:
        print(f"- seed {s}: before {chosen(before[s])}; after {chosen(after[s])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
