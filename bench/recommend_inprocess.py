"""Where a recommend's time goes without HTTP: ``Recommender.recommend`` (blocking) and
``Recommender.recommend_async`` (on an event loop) per request type, against their parts.

    python bench/recommend_inprocess.py --bundle artifacts/serve-work/bundle-100000

Same bundle, request bodies, stored histories, Redis (private server, AOF always) and
thread pins as bench/serve.py. Prints p50 ms per request type for: the store read
(``read_user``), the model work (``embed_user`` + ``index.search``), serialising the
answer, and the whole call with the top-N cache off, and on (second pass = cache hits).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from redis_server import RedisServer
from serve_common import RECOMMEND_TYPES, THREAD_ENV
from serve_requests import requests_for_bundle

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def p50_ms(fn: Callable[[Any], object], reqs: list[Any]) -> float:
    times = []
    for req in reqs:
        t = time.perf_counter()
        fn(req)
        times.append(time.perf_counter() - t)
    return float(np.percentile(times, 50) * 1000)


def measure(svc: Any, state: Any, rs: list[dict[str, Any]], *, cached: bool) -> dict[str, float]:
    """p50 ms of each part for the requests ``rs`` (one type) on service ``svc``."""
    from app.api.schemas import RecommendRequest
    from app.serving.answering import collect_history

    row: dict[str, float] = {}
    rec = svc.recommender
    reqs = [RecommendRequest(**r) for r in rs]
    for req in reqs[:20]:
        rec.recommend(req)  # warm-up
    if cached:
        for req in reqs:
            rec.recommend(req)  # fills the cache
        row["recommend (cache hit)"] = p50_ms(rec.recommend, reqs)
        return row
    row["store read_user"] = p50_ms(
        lambda r: svc.store.read_user(r.user_id or "-", state.domains), reqs
    )

    def work(req: Any) -> None:
        job = rec.prepare(req)  # the checks and the store read
        q = job.query
        by, _ = collect_history(job.state, q.user_id, q.history, job.user, [])
        emb = state.engine.embed_user(q.domain, by)
        seen = {i for ids in by.values() for i in ids}
        state.indexes[q.domain].search(emb.vector, 10, exclude=[seen])

    row["read + embed + search"] = p50_ms(work, reqs)
    answers = [rec.recommend(req) for req in reqs]
    row["serialise answer"] = p50_ms(lambda a: a.model_dump_json(), answers)
    row["recommend (no cache)"] = p50_ms(rec.recommend, reqs)

    async def run_async() -> float:
        times = []
        for req in reqs:
            t = time.perf_counter()
            await rec.recommend_async(req)
            times.append(time.perf_counter() - t)
        return float(np.percentile(times, 50) * 1000)

    row["recommend_async (no cache)"] = asyncio.run(run_async())
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--bundle", default="artifacts/serve-work/bundle-100000")
    ap.add_argument("--source", default="artifacts/demo-bundle", help="the unpadded bundle")
    ap.add_argument("--calls", type=int, default=300)
    a = ap.parse_args()
    for k, v in THREAD_ENV.items():
        os.environ.setdefault(k, v)

    from app.api.schemas import InteractionIn
    from app.lifecycle.engine import load_engine
    from app.service import RecommendationService
    from app.settings import Settings
    from app.store.redis import RedisStore

    bundle = Path(a.bundle)
    reqs, _ = requests_for_bundle(bundle, Path(a.source))
    rows = [InteractionIn(**r) for rs in reqs["stored"].values() for r in rs]
    bodies = {k: [json.loads(b) for b in reqs["bodies"][k]][: a.calls] for k in RECOMMEND_TYPES}
    out: dict[str, dict[str, float]] = {}
    with RedisServer() as server:
        for cache in (0, 200):
            values: dict[str, Any] = {
                "bundle_path": bundle,
                "store_url": server.url,
                "topn_cache_items": cache,
                "replica_sync_interval_s": 0,
                "popularity_refresh_s": 0,
            }
            settings = Settings(**values)
            svc = RecommendationService(settings, RedisStore(server.url), load_engine)
            svc.start()
            assert svc.wait_ready(900)
            svc.loader.wait(900)  # encoder warm-up done: nothing else holds the GIL
            state = svc.state
            assert state is not None
            if cache == 0:
                for start in range(0, len(rows), 500):
                    svc.interactions.add(rows[start : start + 500])
            for kind, rs in bodies.items():
                out.setdefault(kind, {}).update(measure(svc, state, rs, cached=cache > 0))
            svc.stop()
    names = list(next(iter(out.values())))
    print("| p50 ms | " + " | ".join(RECOMMEND_TYPES) + " |")
    print("|---|" + "---:|" * len(RECOMMEND_TYPES))
    for name in names:
        print(f"| {name} | " + " | ".join(f"{out[k].get(name, 0):.3f}" for k in out) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
