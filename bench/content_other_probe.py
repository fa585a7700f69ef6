"""Content kNN with the user's other-domain profile mixed in: does what a customer bought in
another domain tell which items they like here? (A probe, no model: the frozen text
vectors only.)

    python bench/content_other_probe.py --dataset ../shared/datasets/amazon-arts-office \
        --sparsify office=0.1 --seed 0 --out docs/results/ablation/profile-other/knn

Users with history in the domain are scored with ``norm(p_own + w p_other)``, p the
normalised mean text vector of their items here / in the other domains (the arithmetic of
model.nn.blend.mix_profiles, on the raw encoder vectors as content kNN uses
them), for w in ``--weights``; NDCG@20 (%) of every slice on validation and on test.
Writes OUT/LABEL-sSEED.json and prints the table.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from ablation import seeded_config

from model.commands.runner import set_threads
from model.data.loading import load_dataset
from model.data.split import build_split
from model.evaluation import Scorer, evaluate
from model.nn.blend import mix_profiles
from model.pipeline import load_features, restrict
from model.rankers import ContentKNNRanker, other_domain_histories
from model.runconfig import load_run_config

SLICES = ("all", "new_items", "cold_items", "cold_items_vs_all", "deg_1-5", "deg_6-20")


class MixedContentKNN(ContentKNNRanker):
    """Content kNN whose users with history in the domain get ``weight`` x their
    other-domain profile mixed into theirs (users new to the domain: as content kNN)."""

    weight = 0.0

    def bind(self, inputs: dict[str, np.ndarray]) -> Scorer:
        return _MixedScorer(self, inputs, super().bind(inputs))


class _MixedScorer:
    def __init__(self, r: MixedContentKNN, inputs: dict[str, np.ndarray], plain: Scorer) -> None:
        self.r, self.inputs, self.plain = r, inputs, plain

    def scores(self, domain: str, users: np.ndarray, *, cross_domain: bool) -> torch.Tensor | None:
        items = self.r.vecs[domain]
        if cross_domain or not self.r.weight or items is None:
            return self.plain.scores(domain, users, cross_domain=cross_domain)
        pairs = self.inputs[domain]
        own = torch.zeros(len(users), items.shape[1])
        for k, u in enumerate(users):
            rows = pairs[pairs[:, 0] == u, 1]
            if len(rows):
                own[k] = items[torch.as_tensor(rows)].mean(0)
        other = torch.zeros_like(own)
        hist = other_domain_histories(self.r.split, domain, users, self.inputs, self.r.maps)
        for k, by_domain in enumerate(hist):
            parts = [v[h] for d, h in by_domain.items() if (v := self.r.vecs[d]) is not None]
            if parts:
                other[k] = torch.cat(parts).mean(0)
        mixed = mix_profiles(F.normalize(own, dim=1), F.normalize(other, dim=1), self.r.weight)
        return mixed @ items.T


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", type=Path, required=True)
    ap.add_argument("--config", type=Path, default=Path("configs/bench-quality.toml"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sparsify", default=None, help="DOMAIN=SHARE")
    ap.add_argument("--weights", default="0,0.25,0.5,1")
    ap.add_argument("--label", default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    set_threads(args.threads)
    over: dict[str, dict[str, Any]] = {"data": {}}
    if args.sparsify:
        d, share = args.sparsify.split("=")
        over["data"]["sparsify"] = {d: float(share)}
    cfg = seeded_config(load_run_config(args.config, over), "inmo", args.seed)
    dataset = load_dataset(args.dataset, min_rating=cfg.data.min_rating)
    split = restrict(build_split(dataset, cfg.data), cfg.domains)
    features = load_features(dataset, cfg, progress=False)
    if features is None or "text" not in features.modalities:
        ap.error(f"{args.dataset} has no item texts: content kNN has nothing to match")
    ranker = MixedContentKNN(split, features)
    label = args.label or args.dataset.name + (f"-{args.sparsify}" if args.sparsify else "")
    out: dict[str, Any] = {
        "command": "python " + " ".join(sys.argv),
        "machine": f"{os.cpu_count()} cores, {args.threads} thread(s)",
    }
    for weight in (float(x) for x in args.weights.split(",")):
        ranker.weight = weight
        for stage in ("val", "test"):
            res = evaluate(ranker, split, ks=(20,), only=SLICES, stage=stage)
            out[f"{weight:g}/{stage}"] = {
                d: {s: r["ndcg@20"] for s, r in by.items()} for d, by in res.items()
            }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{label}-s{args.seed}.json").write_text(json.dumps(out, indent=1))
    print("| weight | set | domain | " + " | ".join(SLICES) + " |")
    print("|---|---|---|" + "---:|" * len(SLICES))
    for key, by in out.items():
        if "/" not in key:
            continue
        w, stage = key.split("/")
        for d, row in by.items():
            cells = ["-" if row.get(s) is None else f"{100 * row[s]:.2f}" for s in SLICES]
            print(f"| {w} | {stage} | {d} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
