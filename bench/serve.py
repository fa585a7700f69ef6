"""Load benchmark of the real service: latency, throughput, errors and memory by catalogue
size, worker count and concurrency, against two references measured in the same run.

    python bench/serve.py            # full sweep: 1e4/1e5/1e6 items per domain, 1 and 2
                                     # workers, concurrency 1/8/32/64 (~20 min on 2 cores)
    python bench/serve.py --quick    # smoke run: 1e4 items, 1 worker, c=1/8, short points
    make bench-serve                 # the full sweep

What runs (everything on loopback, thread counts pinned: torch 1, FAISS 1, OMP 1):

* **Model**: a real trained bundle (default ``artifacts/demo-bundle``, ``micrec demo build``)
  whose domain catalogues are padded to N items per domain with synthetic items near the
  real ones (each a mix of two real items' layer states and content vectors plus noise),
  written with ``model.bundle.save_bundle`` so the service loads it through the normal
  path (checksums, ``load_bundle``, ``InferenceEngine``). Padded bundles are cached in
  ``--work-dir``. The service picks flat vs IVF per domain from its settings
  (``MICREC_EXACT_INDEX_MAX_ITEMS``, default 50k: 1e4 exact, 1e5/1e6 IVF).
* **Service**: ``python -m app.cli serve`` (= ``micrec serve``: uvicorn, ``--workers`` 1
  and 2) with the Redis store on a private ``redis-server`` started here (AOF,
  ``appendfsync always``, like production), auth on, log level warning (no access log).
  Before measuring: known users get 5 stored interactions each (``POST /v1/interactions``)
  and every request type is sent a few times on fresh connections (warm-up).
* **Load**: ``bench/serve_loadgen.py`` in its own process: asyncio + aiohttp, closed loop,
  keep-alive, fixed duration per point after a warm-up. Requests (n=10, all 3 domains):
  ``known`` (user id with bundle + stored history), ``inductive`` (anonymous, inline
  20-item history), ``cross`` (user id whose history is only in other domains),
  ``reg_text`` (``POST /v1/items`` title/categories/description) and ``reg_image`` (the
  same + a 512x512 JPEG as base64). Points: each type alone at concurrency 1 (the
  single-request table); the recommend mix (known/inductive/cross in equal parts) at every
  concurrency; registrations alone at concurrency 8; one text+image registration at a
  time under 31 concurrent recommends (``reg_under_load``).
* **References, same run**: (1) the framework ceiling: ``bench/serve_bare.py``, a bare
  FastAPI endpoint returning a constant, under the same uvicorn options and worker counts;
  (2) the work floor: ``bench/serve_floor.py`` in a separate process, the same bundle,
  engine and ``DomainIndex`` (same settings), timing ``engine.embed_user`` +
  ``index.search`` per request type (and content encoding + ``add_item`` + ``upsert`` for
  registrations) in a plain loop, plus recall@100 of the service's index vs exact search
  on those user vectors.
* **Registration-to-visibility**: register a text+image item, then send
  ``/v1/recommend`` with ``history=[new id]`` on fresh connections until the new id is in
  the answer (``exclude_seen=false``, n=100); with 2 workers the recommend may land on the
  other worker, which learns the item from the store's change feed.
* Server RSS (uvicorn parent + workers, sampled every 0.5 s), server and load-generator CPU
  seconds, and the 1-minute load average are recorded for every point.

Writes ``<out>.json`` (everything), ``<out>.md`` (tables, targets) and ``<out>.png``.

This file is the command line; the parts live next to it: ``serve_bench.py`` (the sweep),
``serve_bundles.py`` (padded bundles), ``serve_requests.py`` (request bodies),
``serve_procs.py`` (server processes, Redis, load average), ``serve_http.py`` (seeding,
warm-up, the visibility probe), ``serve_floor.py`` (the work floor), ``serve_targets.py``
and ``serve_report.py`` (targets, ``.md`` and ``.png``), ``serve_common.py`` (constants).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
from pathlib import Path

from serve_bench import Bench
from serve_common import THREAD_ENV, log
from serve_report import markdown


def parse_size(text: str) -> int:
    return int(float(text))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--sizes", type=parse_size, nargs="+", default=[10**4, 10**5, 10**6])
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 64])
    ap.add_argument("--duration", type=float, default=7.0, help="seconds per load point")
    ap.add_argument("--single-duration", type=float, default=3.0, help="seconds, c=1 points")
    ap.add_argument("--register-duration", type=float, default=5.0)
    ap.add_argument("--bare-duration", type=float, default=4.0)
    ap.add_argument("--warmup", type=float, default=1.0, help="seconds before each window")
    ap.add_argument("--visibility-trials", type=int, default=4)
    ap.add_argument("--floor-calls", type=int, default=200)
    ap.add_argument(
        "--exact-max-items",
        type=int,
        default=50_000,
        help="MICREC_EXACT_INDEX_MAX_ITEMS (service default)",
    )
    ap.add_argument("--ivf-nlist", type=int, default=None, help="MICREC_IVF_NLIST (default: unset)")
    ap.add_argument("--nprobe", type=int, default=32, help="MICREC_IVF_NPROBE (service default)")
    ap.add_argument(
        "--service-env",
        action="append",
        default=[],
        metavar="MICREC_KEY=VALUE",
        help="extra service setting for every service run (repeatable), e.g. "
        "--service-env MICREC_SEARCH_BATCHING=false",
    )
    ap.add_argument(
        "--request-threads",
        type=int,
        default=None,
        help="MICREC_REQUEST_THREADS (default: unset, the service default)",
    )
    ap.add_argument("--ready-timeout", type=float, default=900)
    ap.add_argument("--bundle", default="artifacts/demo-bundle", help="the real trained bundle")
    ap.add_argument("--work-dir", default="artifacts/bench-serve", help="padded bundles")
    ap.add_argument("--out", default="docs/results/serve")
    ap.add_argument("--quick", action="store_true", help="smoke run: 1e4, 1 worker, c=1/8")
    ap.add_argument(
        "--no-blend",
        action="store_true",
        help="serve the padded bundles without the score blend (model score alone, 64-d "
        "vectors): the cost of the blend is the difference to a run without this flag",
    )
    ap.add_argument(
        "--pad-domains",
        nargs="+",
        default=None,
        metavar="DOMAIN",
        help="pad only these domains to each size (the others keep the real bundle's items), "
        "e.g. --sizes 1e7 --pad-domains office: one domain at 1e7",
    )
    ap.add_argument(
        "--warm-cache",
        action="store_true",
        help="build each size's serving cache with a 1-worker server stopped once ready, "
        "before the measured servers (which then all start on a warm cache)",
    )
    ap.add_argument(
        "--skip",
        default="",
        type=lambda t: set(filter(None, t.split(","))),
        help="comma-separated parts to leave out: bare, floor, single, register, visibility",
    )
    ap.add_argument(
        "--source-root",
        help="run the service and the work floor from this source tree (e.g. a `git worktree` "
        "of an older commit, for before/after comparisons); default: this checkout",
    )
    args = ap.parse_args(argv)
    used = sys.argv[1:] if argv is None else argv
    args.command_line = shlex.join(["python", "bench/serve.py", *used])
    if args.quick:
        args.sizes = [10**4] if "--sizes" not in used else args.sizes
        args.workers = [1] if "--workers" not in used else args.workers
        args.concurrency = [1, 8] if "--concurrency" not in used else args.concurrency
        args.duration, args.single_duration, args.bare_duration = 3.0, 2.0, 2.0
        args.register_duration, args.visibility_trials, args.floor_calls = 2.0, 2, 50
        if "--out" not in used:
            args.out = str(Path(tempfile.gettempdir()) / "micrec-bench-serve-quick" / "serve")
    for k, v in THREAD_ENV.items():
        os.environ.setdefault(k, v)
    bench = Bench(args)
    report = bench.run()
    print(markdown(report))
    log(f"wrote {args.out}.json/.md/.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
