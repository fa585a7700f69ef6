"""What the co-purchase boost costs: its transitions' size and fit time, and per user new to
a domain the boost's length and the time to compute it (model.nn.copurchase).

    python bench/copurchase_size.py --dataset ../shared/datasets/amazon-food-kitchen --k-core 2 \
        --out docs/results/ablation/copurchase-rerank/size-food-kitchen-k2.json

The transitions are fitted on the split's full training input (what a bundle serves with,
``copurchase_top`` 200); the boosts are those of up to 500 of the test's users new to each
domain, from their other-domain history, one user at a time (as the service computes
them, on the model thread). Also most popular's test NDCG@20 of those users, for ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from ablation import seeded_config

from model.commands.runner import set_threads
from model.data.loading import load_dataset
from model.data.split import build_split
from model.evaluation import evaluate, slice_inputs
from model.nn.copurchase import DEFAULT_TOP, fit_copurchase
from model.pipeline import restrict
from model.rankers import PopularRanker, _local_maps, other_domain_histories
from model.runconfig import load_run_config

TEST_SLICE = "cd_cold_users"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--dataset", type=Path, required=True)
    ap.add_argument("--config", type=Path, default=Path("configs/bench-quality.toml"))
    ap.add_argument("--k-core", type=int, default=None)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--users", type=int, default=500)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    set_threads(1)
    over: dict[str, dict[str, Any]] = {"data": {}}
    if args.k_core is not None:
        over["data"]["k_core"] = args.k_core
    out: dict[str, Any] = {"machine": f"{os.cpu_count()} cores, 1 thread", "seeds": {}}
    for seed in args.seeds:
        cfg = seeded_config(load_run_config(args.config, over), "inmo", seed)
        load = os.getloadavg()[0]
        split = restrict(
            build_split(load_dataset(args.dataset, min_rating=cfg.data.min_rating), cfg.data),
            cfg.domains,
        )
        pop = evaluate(PopularRanker(split), split, ks=(20,), only=[TEST_SLICE])
        inputs = {d: s.train for d, s in split.domains.items()}
        t = time.perf_counter()
        cp = fit_copurchase(
            {d: (s.user_ids, s.n_items, inputs[d]) for d, s in split.domains.items()}, DEFAULT_TOP
        )
        rec: dict[str, Any] = {
            "load": load,
            "fit_s": time.perf_counter() - t,
            "transitions": {
                f"{a}->{b}": {"shape": list(m.shape), "nnz": int(m.nnz)}
                for (a, b), m in sorted(cp.transitions.items())
            },
            "file_bytes": sum(m.nnz * 12 + (m.shape[0] + 1) * 8 for m in cp.transitions.values()),
            "popular_test": {d: pop[d][TEST_SLICE]["ndcg@20"] for d in pop},
            "boost": {},
        }
        maps = _local_maps(split)
        for d, s in split.domains.items():
            users = split.cross_domain_cold_users(d)[: args.users]
            hist = other_domain_histories(split, d, users, slice_inputs(split, d, "cd_cold"), maps)
            t = time.perf_counter()
            rows = [cp.boost_rows(d, [h], s.n_items)[0] for h in hist]
            dt = time.perf_counter() - t
            lens = np.array([len(r) for r, _ in rows])
            rec["boost"][d] = {
                "users": len(users),
                "ms_per_user": 1000 * dt / max(len(users), 1),
                "items_median": float(np.median(lens)) if len(lens) else 0.0,
                "items_p99": float(np.percentile(lens, 99)) if len(lens) else 0.0,
                "users_without": int((lens == 0).sum()),
            }
        out["seeds"][str(seed)] = rec
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
