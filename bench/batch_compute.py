"""The model thread's batches, in process: the model work of B waiting recommends computed
together (``Answerer.answer_many``: one batched fold-in, one multi-query search per domain)
against one at a time, per request type and batch size. No HTTP, no store round trips
(each user's stored history is read once beforehand), top-N cache off: the compute alone.

    python bench/batch_compute.py --bundle artifacts/serve-work/bundle-100000 \\
        --out docs/results/serve-steps/batch-inprocess

Same bundle, request bodies and thread pins as bench/serve.py. Sizes are interleaved in
rounds (B=1 measured next to every other B) so that load changes hit all of them alike;
the table is the median over rounds of microseconds of model work per request, and its
ratio to B=1 in the same round. It also checks that every batched answer lists the same
items as the one-at-a-time answer.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from serve_common import RECOMMEND_TYPES, ROOT, THREAD_ENV
from serve_requests import requests_for_bundle


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--bundle", default="artifacts/serve-work/bundle-100000")
    ap.add_argument("--source", default="artifacts/demo-bundle", help="the unpadded bundle")
    ap.add_argument("--requests", type=int, default=384, help="per request type")
    ap.add_argument("--sizes", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", default=None, help="write OUT.md and OUT.json")
    ap.add_argument("--profile", choices=RECOMMEND_TYPES, help="cProfile one type, B=1")
    a = ap.parse_args()
    for k, v in THREAD_ENV.items():
        os.environ.setdefault(k, v)

    from app.api.schemas import InteractionIn, RecommendRequest
    from app.lifecycle.engine import load_engine
    from app.service import RecommendationService
    from app.settings import Settings
    from app.store.sqlite import SQLiteStore

    bundle = Path(a.bundle)
    reqs, n_items = requests_for_bundle(bundle, Path(a.source))
    bodies = {k: [json.loads(b) for b in reqs["bodies"][k]][: a.requests] for k in RECOMMEND_TYPES}
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "state.db"
        values: dict[str, Any] = {
            "bundle_path": bundle,
            "store_url": f"sqlite:///{db}",
            "topn_cache_items": 0,  # the compute alone
        }
        settings = Settings(**values)
        svc = RecommendationService(settings, SQLiteStore(db), load_engine)
        svc.start()
        assert svc.wait_ready(900)
        svc.loader.wait(900)
        rows = [InteractionIn(**r) for rs in reqs["stored"].values() for r in rs]
        for start in range(0, len(rows), 500):
            svc.interactions.add(rows[start : start + 500])
        rec, state = svc.recommender, svc.state
        assert state is not None
        jobs: dict[str, list[Any]] = {}
        for kind, rs in bodies.items():
            jobs[kind] = []
            for r in rs:
                # the checks and the user's store read, done once: the model work alone
                jobs[kind].append(rec.prepare(RecommendRequest(**r)))
        answer_many = rec.answerer.answer_many
        for js in jobs.values():
            answer_many(js[:32])  # warm-up
        if a.profile:
            import cProfile

            cProfile.runctx(
                "for j in jobs[a.profile]: answer_many([j])",
                globals(),
                locals(),
                sort="cumulative",
            )
            return 0
        reference = {k: [answer_many([j])[0] for j in js] for k, js in jobs.items()}
        mismatches = {k: 0 for k in jobs}
        per_round: dict[str, dict[int, list[float]]] = {k: {b: [] for b in a.sizes} for k in jobs}
        for _ in range(a.rounds):
            for kind, js in jobs.items():
                for b in a.sizes:
                    used = len(js) // b * b
                    t = time.perf_counter()
                    out = [o for s in range(0, used, b) for o in answer_many(js[s : s + b])]
                    per_round[kind][b].append((time.perf_counter() - t) / used * 1e6)
                    for got, ref in zip(out, reference[kind], strict=False):
                        if [i.item_id for i in got.items] != [i.item_id for i in ref.items]:  # type: ignore[union-attr]
                            mismatches[kind] += 1
        svc.stop()
    result: dict[str, Any] = {
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "bundle": str(bundle),
        "items_per_domain": n_items,
        "requests_per_type": a.requests,
        "rounds": a.rounds,
        "load_avg": os.getloadavg(),
        "git_commit": os.popen(f"git -C {ROOT} rev-parse --short HEAD").read().strip(),
        "us_per_request": {
            k: {str(b): float(np.median(v)) for b, v in d.items()} for k, d in per_round.items()
        },
        "ratio_to_one": {
            k: {str(b): float(np.median(np.array(d[b]) / np.array(d[a.sizes[0]]))) for b in a.sizes}
            for k, d in per_round.items()
        },
        "answers_differing_from_one_at_a_time": mismatches,
    }
    lines = [
        "| type | " + " | ".join(f"B={b}" for b in a.sizes) + " |",
        "|---|" + "---:|" * len(a.sizes),
    ]
    for k in jobs:
        us, ratio = result["us_per_request"][k], result["ratio_to_one"][k]
        cells = [f"{us[str(b)]:.0f} us ({ratio[str(b)]:.2f}x)" for b in a.sizes]
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    print(table)
    print("answers differing from one at a time:", mismatches)
    if a.out:
        dest = Path(a.out)
        dest.with_suffix(".json").write_text(json.dumps(result, indent=1))
        dest.with_suffix(".md").write_text(
            f"# Model work per request, computed in batches of B (in process)\n\n"
            f"`python bench/{result['command']}` at {result['git_commit']}, "
            f"{result['items_per_domain']:,} items per domain, {a.requests} requests per type, "
            f"median of {a.rounds} interleaved rounds, load average "
            f"{', '.join(f'{x:.2f}' for x in result['load_avg'])} at the end.\n\n"
            f"Microseconds of model work per request (ratio to B=1 in the same round):\n\n"
            f"{table}\n\nAnswers differing from one at a time: {mismatches}.\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
