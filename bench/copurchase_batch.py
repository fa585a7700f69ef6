"""What computing the co-purchase boosts of one batch of requests costs when nobody in it
has items in another domain, against a batch where everybody does (model.nn.copurchase
``CoPurchase.boosts``, which the service calls per batch of users with history in a
domain once the bundle has a warm co-purchase weight).

    python bench/copurchase_batch.py --dataset ../shared/datasets/amazon-arts-office \
        --out docs/results/serve_warm_boost_batch.json

The transitions are fitted on the split's full training input (``copurchase_top`` 200, as a
bundle serves them). Each batch holds ``--batch`` users: "none elsewhere" gives each a
history of 10 random items in the target domain only (what an inline-history request of a
new visitor carries); "10 elsewhere" adds 10 random items of the other domain. Median
milliseconds per batch over ``--seconds`` of repeated calls, one thread, both in one run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from machine import git_commit, host_facts

from model.commands.runner import set_threads
from model.data.loading import load_dataset
from model.data.split import build_split
from model.nn.copurchase import DEFAULT_TOP, fit_copurchase
from model.pipeline import restrict
from model.runconfig import load_run_config


def _time(fn: Any, seconds: float) -> float:
    """Median ms per call over ``seconds`` of calls (one warm-up call first)."""
    fn()
    times: list[float] = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        fn()
        times.append(1000 * (time.perf_counter() - t0))
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--dataset", type=Path, required=True)
    ap.add_argument("--config", type=Path, default=Path("configs/bench-quality.toml"))
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args(argv)
    set_threads(1)
    cfg = load_run_config(a.config, {})
    split = restrict(build_split(load_dataset(a.dataset), cfg.data), cfg.domains)
    domains = sorted(split.domains)
    cp = fit_copurchase(
        {d: (s.user_ids, s.n_items, s.train) for d, s in split.domains.items()}, DEFAULT_TOP
    )
    rng = np.random.default_rng(0)
    rows = []
    for target in domains:
        other = next(d for d in domains if d != target)
        n_target, n_other = split.domains[target].n_items, split.domains[other].n_items
        for b in a.batch:
            alone = [{target: rng.integers(0, n_target, 10)} for _ in range(b)]
            both = [{**h, other: rng.integers(0, n_other, 10)} for h in alone]
            row: dict[str, Any] = {"target": target, "batch": b}
            for name, hist in (("none elsewhere", alone), ("10 elsewhere", both)):
                row[name] = _time(partial(cp.boosts, target, hist, n_target), a.seconds)
            rows.append(row)
            print(json.dumps(row))
    report = {
        "command": "python bench/copurchase_batch.py " + " ".join(argv or sys.argv[1:]),
        "git": git_commit(),
        "machine": host_facts(),
        "load_1min": os.getloadavg()[0],
        "rows": rows,
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
