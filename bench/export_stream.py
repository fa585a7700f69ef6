"""``micrec export`` on a large store: time and peak memory, to check that it streams.

Fills a fresh SQLite store (or the Redis at ``--redis-url``, under a fresh key prefix) with
``--rows`` interactions of ``--rows / 20`` users on the demo catalogue's items, then runs
the export in a child process and reports its wall time and peak RSS (the child's own
``ru_maxrss``, Linux). An export that held every row in memory would grow with ``--rows``; a streamed
one stays near the size of the process (torch, the bundle's item ids).

    python bench/export_stream.py --rows 100000 --rows 1000000 --out docs/results/export_stream.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHILD = """
import sys, time, json, resource
from pathlib import Path
from app.learning.export import export_dataset
from app.store.factory import create_store
from app.store.redis import RedisStore
url, prefix, bundle, out = sys.argv[1:5]
store = RedisStore(url, prefix=prefix) if prefix else create_store(url)
t = time.perf_counter()
r = export_dataset(store, Path(bundle), Path(out), progress=False)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": time.perf_counter() - t, "counts": r.counts, "peak_mb": peak}))
"""


def fill(store: object, rows: int, bundle: Path) -> float:
    from app.store.base import Interaction

    cat = json.loads((bundle / "catalogue.json").read_text())
    items = [(d, i) for d, c in cat.items() for i in c["item_ids"]]
    t, batch, now = time.perf_counter(), [], time.time()
    for k in range(rows):
        d, i = items[(k * 7919) % len(items)]
        batch.append(Interaction(f"bench-u{k // 20}", i, d, now + k * 1e-3))
        if len(batch) == 5000:
            store.add_interactions(batch, history_cap=200)  # type: ignore[attr-defined]
            batch = []
    if batch:
        store.add_interactions(batch, history_cap=200)  # type: ignore[attr-defined]
    return time.perf_counter() - t


def run(rows: int, bundle: Path, redis_url: str | None) -> dict[str, object]:
    from app.store.redis import RedisStore
    from app.store.sqlite import SQLiteStore

    with tempfile.TemporaryDirectory() as tmp:
        prefix = f"bench-{uuid.uuid4().hex[:8]}:" if redis_url else ""
        url = redis_url or f"sqlite:///{tmp}/state.db"
        store = (
            RedisStore(redis_url, prefix=prefix) if redis_url else SQLiteStore(f"{tmp}/state.db")
        )
        fill_s = fill(store, rows, bundle)
        proc = subprocess.run(
            [sys.executable, "-c", CHILD, url, prefix, str(bundle), f"{tmp}/export"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        )
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        size = sum(f.stat().st_size for f in Path(f"{tmp}/export").iterdir() if f.is_file())
    return {
        "rows": rows,
        "store": "redis" if redis_url else "sqlite",
        "fill_s": round(fill_s, 1),
        "export_s": round(out["seconds"], 2),
        "rows_per_s": round(out["counts"].get("rows_store", 0) / out["seconds"]),
        "peak_rss_mb": round(out["peak_mb"], 1),
        "export_mb": round(size / 2**20, 1),
        "counts": out["counts"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, action="append", required=True)
    p.add_argument("--bundle", type=Path, default=REPO / "artifacts/demo-bundle")
    p.add_argument("--redis-url", default=None)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    results = []
    for n in args.rows:
        r = run(n, args.bundle, args.redis_url)
        print(json.dumps(r), flush=True)
        results.append(r)
    if args.out:
        args.out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
