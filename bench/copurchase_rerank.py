"""What the co-purchase re-ranking stage adds to a recommend's index search (a micro-benchmark).

    python bench/copurchase_rerank.py --out docs/results/ablation/copurchase-rerank/rerank.json

A real exact FAISS index (app/index/domain.py) of random unit vectors at the default
serving length (449), one query at a time: p50 / p99 ms of the top-20 search alone and of
the search + ``app.serving.copurchase.rerank`` with a boost of m items (the measured
median and 99th-percentile boost lengths on amazon-arts-office and food-kitchen are
~30-420 and ~200-1,400 items: bench/copurchase_size.py), measured in the same run. The
boost's own computation (about 1 ms per user) is in bench/copurchase_size.py.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--items", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--boost", type=int, nargs="+", default=[30, 400, 1400])
    ap.add_argument("--dim", type=int, default=449)
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    import faiss

    faiss.omp_set_num_threads(1)
    from app.index.domain import DomainIndex
    from app.serving.copurchase import rerank
    from model.serving_types import ItemBoost

    rng = np.random.default_rng(0)
    out: dict[str, object] = {
        "machine": f"{os.cpu_count()} cores, 1 thread, load {os.getloadavg()[0]:.1f}",
        "dim": args.dim,
        "rows": [],
    }
    for n in args.items:
        ids = [f"i{k}" for k in range(n)]
        x = rng.standard_normal((n, args.dim)).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        index = DomainIndex("d", args.dim)
        index.build(ids, x)
        queries = rng.standard_normal((args.queries, args.dim)).astype(np.float32)
        for m in args.boost:
            search_t, both_t = [], []
            for q in queries:
                picked = rng.choice(n, min(m, n), replace=False)
                boost = ItemBoost(
                    [ids[k] for k in picked], rng.uniform(0, 1, len(picked)).astype(np.float32)
                )
                t = time.perf_counter()
                hits = index.search(q.reshape(1, -1), 20, exclude=[set()])[0]
                t1 = time.perf_counter()
                rerank(index, q, hits, boost, 20, lambda _: True)
                t2 = time.perf_counter()
                search_t.append(t1 - t)
                both_t.append(t2 - t)
            row = {
                "items": n,
                "boost": m,
                "search_p50_ms": 1000 * float(np.percentile(search_t, 50)),
                "search_rerank_p50_ms": 1000 * float(np.percentile(both_t, 50)),
                "search_p99_ms": 1000 * float(np.percentile(search_t, 99)),
                "search_rerank_p99_ms": 1000 * float(np.percentile(both_t, 99)),
            }
            row["ratio_p50"] = row["search_rerank_p50_ms"] / row["search_p50_ms"]
            out["rows"].append(row)  # type: ignore[attr-defined]
            print(json.dumps(row))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
