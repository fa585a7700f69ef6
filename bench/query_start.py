"""Query-start quality offline: visitors who typed one item's title, against most-popular.

    python bench/query_start.py --dataset ../shared/datasets/amazon-arts-office \
        --cache-dir artifacts/cache --seeds 0 1 2 --out docs/results/query-start

Per seed: the split and content features of ``configs/bench-quality.toml`` (the feature
cache is reused: nothing is re-encoded but the titles), the blend's content reducer as
``micrec train`` fits it (model.blendfit.fit_reducer) and the items' prior from their
training degree. The query weights are fitted on validation exactly as a bundle's are
(model.queryfit.fit_query_weights), then every test user with at least two test items
is a visitor whose query is the title of one of them (seeded), removed from the targets
and the candidates. NDCG@20 of the served query score vs most-popular (the prior alone:
it ranks by training degree) and vs the content match alone, on the same visitors.

The query score has no model part (a visitor has no history to fold in), so no backbone
is trained: what is measured is the score ``POST /v1/recommend`` with a ``query`` serves.
Writes OUT/results.json and OUT/results.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from machine import cpu_model, git_commit

from model.blendfit import fit_reducer
from model.commands.runner import set_threads
from model.data.loading import load_dataset
from model.encoders.factory import create_encoder
from model.nn.blend import Blend, DomainBlend
from model.pipeline import load_features, split_for
from model.queryfit import (
    fit_query_weights,
    query_cases,
    query_ndcg,
    ratio_weights,
    reduced_queries,
    title_features,
)
from model.runconfig import load_run_config
from model.training import domain_features

ROOT = Path(__file__).resolve().parents[1]


class CachedText:
    """The text encoder with a title -> vector memo (titles repeat across seeds)."""

    def __init__(self, name: str) -> None:
        self.encoder = create_encoder(name)
        self.dim = self.encoder.dim
        self.memo: dict[str, np.ndarray] = {}

    def encode(self, texts: list[str], **kw: Any) -> np.ndarray:
        todo = sorted({t for t in texts if t not in self.memo})
        if todo:
            for t, v in zip(todo, self.encoder.encode(todo, **kw), strict=True):
                self.memo[t] = v
        return np.stack([self.memo[t] for t in texts])


def run_seed(dataset: Any, cfg: Any, seed: int, text: CachedText) -> dict[str, Any]:
    cfg = replace(cfg, data=replace(cfg.data, seed=seed), blend=replace(cfg.blend, seed=seed))
    split = split_for(dataset, cfg)
    features = load_features(dataset, cfg, progress=False)
    reducer = fit_reducer(split, features, cfg.blend.content_dim)
    assert reducer is not None, "no content features"
    blend = Blend(reducer, {})
    blends: dict[str, DomainBlend] = {}
    for d, ds in split.domains.items():
        degree = np.bincount(ds.train[:, 1], minlength=ds.n_items)
        raw, _ = domain_features(features, ds.item_ids, reducer.modalities)
        blends[d] = blend.for_domain(d, torch.as_tensor(degree), raw)
    titles = {d: [dataset.items[i].title for i in ds.item_ids] for d, ds in split.domains.items()}
    pictures = {
        d: domain_features(features, ds.item_ids, ("image",))[0] for d, ds in split.domains.items()
    }
    qf = title_features(titles, text, pictures, reducer.modalities)
    t0 = time.time()
    weights, report = fit_query_weights(
        split, reducer, blends, qf, seed=seed, max_users=cfg.blend.max_users
    )
    out: dict[str, Any] = {"seed": seed, "fit_s": round(time.time() - t0, 1), "domains": {}}
    for d, ds in split.domains.items():
        cases = query_cases(ds, "test", seed=seed, max_users=None)
        cq = reduced_queries(reducer, qf, d, cases.query_items.tolist())
        chosen = weights.get(d, blends[d].query)
        row = {
            "visitors": len(cases.users),
            "weights": chosen.to_dict(),
            "validation": report.get(d),
            "ndcg@20": {
                "query": float(query_ndcg(cq, blends[d], cases, chosen).mean()),
                "popular": float(query_ndcg(cq, blends[d], cases, ratio_weights(np.inf)).mean()),
                "content_only": float(query_ndcg(cq, blends[d], cases, ratio_weights(0.0)).mean()),
            },
        }
        out["domains"][d] = row
        print(f"seed {seed} {d}: {row['visitors']} visitors, {row['ndcg@20']}", flush=True)
    return out


def report_md(results: dict[str, Any]) -> str:
    runs = results["runs"]
    domains = sorted(runs[0]["domains"])
    lines = [
        "| domain | visitors (mean) | query NDCG@20 | most-popular NDCG@20 | content only | "
        "query / popular | fitted w_prior / w_content |",
        "|---|---|---|---|---|---|---|",
    ]
    for d in domains:
        rows = [r["domains"][d] for r in runs]

        def stat(key: str, rows: list[dict[str, Any]] = rows) -> tuple[float, float]:
            v = np.array([r["ndcg@20"][key] for r in rows])
            return float(v.mean()), float(v.std())

        q, p, c = stat("query"), stat("popular"), stat("content_only")
        ratios = ", ".join(
            "inf" if r["weights"]["content"] == 0 else f"{r['weights']['prior']:g}" for r in rows
        )
        lines.append(
            f"| {d} | {np.mean([r['visitors'] for r in rows]):.0f} | {q[0]:.4f} ± {q[1]:.4f} "
            f"| {p[0]:.4f} ± {p[1]:.4f} | {c[0]:.4f} ± {c[1]:.4f} | {q[0] / p[0]:.2f} x "
            f"| {ratios} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", type=Path, required=True)
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "bench-quality.toml")
    ap.add_argument("--cache-dir", type=Path, default=ROOT / "artifacts" / "cache")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    set_threads(args.threads)
    cfg = load_run_config(args.config, {"features": {"cache_dir": str(args.cache_dir)}})
    dataset = load_dataset(args.dataset, min_rating=cfg.data.min_rating)
    text = CachedText(cfg.features.text)
    started = time.time()
    runs = [run_seed(dataset, cfg, seed, text) for seed in args.seeds]
    results = {
        "command": "python " + " ".join([sys.argv[0], *(argv or sys.argv[1:])]),
        "dataset": str(args.dataset),
        "commit": git_commit(),
        "machine": f"{cpu_model()}, {os.cpu_count()} cores, {args.threads} thread(s)",
        "seconds": round(time.time() - started),
        "runs": runs,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    (args.out / "results.md").write_text(report_md(results))
    print(report_md(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
