"""Interaction writes per second through ``Store.add_interactions``, on SQLite and on a
private redis-server: what counting popularity per API key (``source`` / ``source_cap``)
costs a write. Run it on two source trees (the code before: ``PYTHONPATH`` at an unpacked
``git archive``) and compare; the rounds alternate nothing, so run both back to back.

    PYTHONPATH=/tmp/before python bench/interaction_writes.py --label before
    PYTHONPATH=$PWD python bench/interaction_writes.py --label after          # cap 50
    PYTHONPATH=$PWD python bench/interaction_writes.py --label after-nocap --cap 0

2,000 items and 20,000 users x 10 rows: 100 users per item on average, so with the cap
about half the pairs are past it and skip the popularity writes.
"""

from __future__ import annotations

import argparse
import inspect
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from redis_server import RedisServer  # bench/, the script's directory

from app.store.base import Interaction, Store
from app.store.redis import RedisStore
from app.store.sqlite import SQLiteStore


def rows_of(users: int, per_user: int, items: int) -> list[Interaction]:
    return [
        Interaction(f"u{u}", f"i{(u * 7919 + k * 104729) % items}", "d", float(k))
        for u in range(users)
        for k in range(per_user)
    ]


def write(store: Store, rows: list[Interaction], batch: int, cap: int) -> float:
    kwargs: dict[str, Any] = {}
    if "source" in inspect.signature(store.add_interactions).parameters:
        kwargs = {"source": "bench-key", "source_cap": cap}
    t0 = time.perf_counter()
    for start in range(0, len(rows), batch):
        store.add_interactions(rows[start : start + batch], 200, **kwargs)
    return time.perf_counter() - t0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--label", default="")
    p.add_argument("--users", type=int, default=20000)
    p.add_argument("--per-user", type=int, default=10)
    p.add_argument("--items", type=int, default=2000)
    p.add_argument("--batch", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--cap", type=int, default=50, help="source_cap (50: the service's default)")
    args = p.parse_args()
    rows = rows_of(args.users, args.per_user, args.items)
    for r in range(args.rounds):
        with tempfile.TemporaryDirectory() as tmp:
            sqlite = SQLiteStore(Path(tmp) / "state.db")
            took = write(sqlite, rows, args.batch, args.cap)
            sqlite.close()
        print(f"| {args.label} | sqlite | {r} | {len(rows):,} | {len(rows) / took:,.0f} |")
        with RedisServer() as server:
            redis_store = RedisStore(server.url)
            took = write(redis_store, rows, args.batch, args.cap)
            mib = redis_store._r.info("memory")["used_memory"] / 2**20
            redis_store.close()
        print(
            f"| {args.label} | redis | {r} | {len(rows):,} | {len(rows) / took:,.0f} "
            f"| {mib:.1f} MiB used |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
