"""Does co-purchase add to the served model for users new to a domain? (a probe)

    python bench/cd_cold_added.py --dataset ../shared/datasets/amazon-arts-office --seed 0 \
        --checkpoint /tmp/ckpt/arts-office-inmo-s0.pt --out docs/results/ablation/cd-cold-probes/added

The served model's scores for users new to a domain (the ``both_maps_decay`` row of
bench/ablation.py on a saved backbone: both maps, content decay, blend fitted on
validation) plus ``w`` x the user's exact cross-domain co-purchase score
(bench/cd_cold_probe.py, max-normalised per user) scaled by the spread of the user's
served scores; ``w`` is chosen per domain on the validation pseudo-cold users, then test
is read once. A gain here would justify serving co-purchase as a blend part.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ablation import probe_arguments, probe_backbone, served_row
from cd_cold_probe import TEST_SLICE, CoPurchaseRanker

from model.evaluation import PSEUDO_COLD_SLICE, Scorer, evaluate
from model.rankers import MICRecRanker

log = logging.getLogger("cd_cold_added")
WEIGHTS = (0.0, 0.05, 0.1, 0.25, 0.5, 1.0)
"""Weights in units of the served score's spread per unit of co-purchase spread."""


class Added:
    """The served ranker's scores + w x spread x co-purchase (cross-domain slices only)."""

    def __init__(self, served: MICRecRanker, co: CoPurchaseRanker, w: float) -> None:
        self.served, self.co, self.w = served, co, w
        self.name = f"served + {w:g} co-purchase"

    def serves(self, slice_name: str) -> bool:
        return slice_name in (TEST_SLICE, PSEUDO_COLD_SLICE)

    def bind(self, inputs: dict[str, np.ndarray]) -> Scorer:
        return _AddedScorer(self.served.bind(inputs), self.co.bind(inputs), self.w)


class _AddedScorer:
    def __init__(self, served: Scorer, co: Scorer, w: float) -> None:
        self.served, self.co, self.w = served, co, w

    def scores(self, domain: str, users: np.ndarray, *, cross_domain: bool) -> torch.Tensor:
        s = self.served.scores(domain, users, cross_domain=cross_domain)
        assert s is not None
        if not self.w:
            return s
        c = self.co.scores(domain, users, cross_domain=cross_domain)
        assert c is not None
        spread = s.masked_fill(~torch.isfinite(s), 0).std(dim=1, keepdim=True)
        return s + self.w * spread * c / c.std(dim=1, keepdim=True).clamp_min(1e-12)


def report(folder: Path) -> list[str]:
    """Markdown: per run file, seed and domain, the served model alone (w = 0) and with
    the co-purchase weight validation chose (per rank), validation and test NDCG@20."""
    lines = [
        "| run | seed | domain | variant | validation w=0 | validation chosen | test w=0 "
        "| test chosen | test ratio |",
        "|---|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for f in sorted(folder.glob("*.json")):
        r = json.loads(f.read_text())
        val, test = r["val"], r["test"]
        groups: dict[str, list[str]] = {}
        for key in val:  # "rank R, w W" (or a bare weight: exact, max-normalised)
            groups.setdefault(key.split(", w")[0] if ", w" in key else "exact", []).append(key)
        for group, keys in groups.items():
            zero = next(k for k in keys if float(k.rsplit(" ", 1)[-1]) == 0.0)
            for d in val[zero]:
                best = max(keys, key=lambda k: val[k][d])
                lines.append(
                    f"| {f.stem} | {r['seed']} | {d} | {group} (w={best.rsplit(' ', 1)[-1]}) "
                    f"| {100 * val[zero][d]:.2f} | {100 * val[best][d]:.2f} "
                    f"| {100 * test[zero][d]:.2f} | {100 * test[best][d]:.2f} "
                    f"| {test[best][d] / test[zero][d]:.3f} |"
                )
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    if argv is None and len(sys.argv) == 3 and sys.argv[1] == "--report":
        print("\n".join(report(Path(sys.argv[2]))))
        return 0
    probe_arguments(ap)
    ap.add_argument(
        "--ranks", type=int, nargs="+", default=[0], help="0: exact co-purchase; r: rank r"
    )
    args = ap.parse_args(argv)
    cfg, split, features, model = probe_backbone(args)
    # the served model before the boost
    served, *_ = served_row(cfg, split, features, model, replace(cfg.blend, copurchase=False))
    out: dict[str, Any] = {
        "label": args.label,
        "seed": args.seed,
        "machine": f"{os.cpu_count()} cores, {args.threads} thread(s), load {os.getloadavg()[0]:.1f}",
        "rule": model.config.cross_domain_rule,
        "ranks": args.ranks,
        "val": {},
        "test": {},
    }
    for rank in args.ranks:
        co = CoPurchaseRanker(split, 0.0, rank)
        for w in WEIGHTS:
            r = Added(served, co, w)
            val = evaluate(r, split, ks=(20,), stage="val", only=[PSEUDO_COLD_SLICE])
            test = evaluate(r, split, ks=(20,), only=[TEST_SLICE])
            key = f"rank {rank}, w {w:g}"
            out["val"][key] = {d: val[d][PSEUDO_COLD_SLICE]["ndcg@20"] for d in val}
            out["test"][key] = {d: test[d][TEST_SLICE]["ndcg@20"] for d in test}
            log.info("%s val %s test %s", key, out["val"][key], out["test"][key])
    path = args.out / f"{args.label}-std-s{args.seed}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
