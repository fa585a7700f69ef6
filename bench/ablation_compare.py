"""One ablation row against another, seed by seed: test and validation NDCG@20 and ratios.

    python bench/ablation_compare.py --a DIR_A:ROW_A --b DIR_B:ROW_B \
        --names "content 128" "content 384" > docs/results/ablation/content-dim/compare.md

``DIR``: an ``--out`` of bench/ablation.py run (its runs/*.json); ``ROW``: a row name
(``both_maps_decay``, ``both_maps_decay_cbridge``, ...). Only the (dataset, seed) pairs
that both sides ran are compared; means over those seeds per dataset and domain, and
the ratio B / A of the means.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

TEST = ("all", "cd_cold_users", "cold_items", "cold_items_vs_all", "deg_1-5")
VAL = ("all", "cd_pseudo_cold")


def load(spec: str) -> tuple[str, dict[tuple[str, int], dict[str, Any]]]:
    folder, row = spec.rsplit(":", 1)
    out = {}
    for f in sorted(Path(folder).glob("runs/*.json")):
        run = json.loads(f.read_text())
        if row in run:
            out[(run["label"], int(run["seed"]))] = {"test": run[row], "val": run[f"{row}_val"]}
    return row, out


def table(a: dict[Any, Any], b: dict[Any, Any], names: tuple[str, str]) -> list[str]:
    keys = sorted(set(a) & set(b))
    lines = [
        f"NDCG@20 (%), mean over the seeds both ran; ratio = {names[1]} / {names[0]}.",
        "",
        "| data / domain | seeds | slice | " + " | ".join(names) + " | ratio |",
        "|---|---|---|---:|---:|---:|",
    ]
    for label in sorted({k[0] for k in keys}):
        ks = [k for k in keys if k[0] == label]
        seeds = ",".join(str(k[1]) for k in ks)
        for domain in a[ks[0]]["test"]:
            for stage, slices in (("test", TEST), ("val", VAL)):
                for sl in slices:
                    va = [a[k][stage][domain].get(sl, {}).get("ndcg@20") for k in ks]
                    vb = [b[k][stage][domain].get(sl, {}).get("ndcg@20") for k in ks]
                    if None in va or None in vb:
                        continue
                    ma, mb = 100 * float(np.mean(va)), 100 * float(np.mean(vb))
                    ratio = f"{mb / ma:.2f}" if ma else "n/a"
                    name = sl if stage == "test" else f"validation {sl}"
                    lines.append(
                        f"| {label} / {domain} | {seeds} | {name} | {ma:.2f} | {mb:.2f} | {ratio} |"
                    )
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--a", required=True, metavar="DIR:ROW")
    ap.add_argument("--b", required=True, metavar="DIR:ROW")
    ap.add_argument("--names", nargs=2, default=None, metavar=("A", "B"))
    args = ap.parse_args(argv)
    row_a, a = load(args.a)
    row_b, b = load(args.b)
    names = tuple(args.names) if args.names else (row_a, row_b)
    print("\n".join(table(a, b, (names[0], names[1]))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
