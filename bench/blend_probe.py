"""One trained model, its score blend fitted with given settings, and every slice.

    python bench/blend_probe.py --dataset ../shared/datasets/amazon-arts-office \
        --variant micrec --seed 0 --set cold_item_weight=0.5 --blend content_dim=384 \
        --checkpoint artifacts/probe/micrec-cold05-0.pt --out artifacts/probe/micrec-cold05-0.json

For questions one model answers (what a [model] key does to the content path, what a
[blend] key does to the fit): trains ``--variant`` with configs/bench-quality.toml's budget
(or loads ``--checkpoint`` when it exists, so several blend settings can be compared on
one model), fits the blend on validation, and prints NDCG@20 per slice on the test split
for the model alone, the blend, popular and content kNN, plus the fit's log lines with the
best single part per validation slice. docs/results/quality.md quotes its runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import tomllib
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from model.blendfit import fit_blend
from model.commands.runner import set_threads
from model.data.loading import load_dataset
from model.data.split import build_split
from model.evaluation import evaluate
from model.nn.config import BlendConfig
from model.pipeline import load_features, restrict
from model.rankers import ContentKNNRanker, MICRecRanker, PopularRanker
from model.reporting import TARGET_SLICES
from model.runconfig import load_run_config
from model.training import Trainer

SLICES = (*TARGET_SLICES, "cold_items_vs_all")


def _pairs(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, _, value = item.partition("=")
        try:
            out[key] = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            out[key] = value
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", type=Path, required=True)
    ap.add_argument("--config", type=Path, default=Path("configs/bench-quality.toml"))
    ap.add_argument("--variant", default="micrec")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", action="append", default=[], help="[model] KEY=VALUE")
    ap.add_argument("--blend", action="append", default=[], help="[blend] KEY=VALUE")
    ap.add_argument("--checkpoint", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=None, help="results JSON")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    set_threads(args.threads)
    base = load_run_config(args.config, {"model": _pairs(args.set)} if args.set else None)
    cfg = replace(
        base, data=replace(base.data, seed=args.seed), train=replace(base.train, seed=args.seed)
    )
    dataset = load_dataset(args.dataset)
    features = load_features(dataset, cfg, progress=False)
    split = restrict(build_split(dataset, cfg.data), cfg.domains)
    trainer = Trainer(split, features, cfg.model.ablate(args.variant), cfg.train)
    t0 = time.perf_counter()
    if args.checkpoint is not None and args.checkpoint.exists():
        trainer.model.load_state_dict(torch.load(args.checkpoint, weights_only=True))
        model = trainer.model
    else:
        res = trainer.fit(progress=False)
        model = res.model
        print(f"trained in {time.perf_counter() - t0:.0f} s, best epoch {res.best_epoch}")
        if args.checkpoint is not None:
            args.checkpoint.parent.mkdir(parents=True, exist_ok=True)
            torch.save(model.state_dict(), args.checkpoint)
    blend, _ = fit_blend(model, split, features, BlendConfig(**_pairs(args.blend)))  # type: ignore[arg-type]
    out: dict[str, Any] = {
        "model": evaluate(MICRecRanker("model", model, split, features), split, ks=(20,)),  # type: ignore[arg-type]
        "blend": evaluate(
            MICRecRanker("blend", model, split, features, blend=blend),  # type: ignore[arg-type]
            split,
            ks=(20,),
        ),
        "popular": evaluate(PopularRanker(split), split, ks=(20,)),
    }
    if features is not None and "text" in features.modalities:
        out["content-knn"] = evaluate(ContentKNNRanker(split, features), split, ks=(20,))
    for d in sorted(split.domains):
        print(f"{d} NDCG@20 %".ljust(24) + "".join(m.rjust(12) for m in out))
        for s in SLICES:
            cells = "".join(
                f"{100 * (out[m][d][s]['ndcg@20'] or 0):12.2f}" if s in out[m][d] else "n/a"
                for m in out
            )
            print(f"{d} {s}".ljust(24) + cells)
    out["weights"] = blend.weights_json()
    out["command"] = "python " + " ".join(sys.argv)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
