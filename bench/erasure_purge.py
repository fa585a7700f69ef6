"""What purging an erasure from the store's files costs (``Store.purge_erased``).

Fills each store with ``--users`` users x ``--rows`` interactions (plus one keyed request
per 100 users), erases one user, then purges: SQLite checkpoints and truncates its WAL
inside the call; Redis starts an AOF rewrite, timed here until it has completed and no
file of the server holds the erased id. Also reports the erasure itself and the files'
sizes. A private redis-server (bench/redis_server.py, AOF ``appendfsync always``).

    python bench/erasure_purge.py --users 20000 --rows 10
    python bench/erasure_purge.py --users 20000 --rows 10 --secure-delete-rounds 3
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from redis_server import RedisServer  # noqa: E402  (bench/, the script's directory)

from app.store.base import IdempotencyRecord, Interaction, Store  # noqa: E402
from app.store.redis import RedisStore  # noqa: E402
from app.store.sqlite import SQLiteStore  # noqa: E402

VICTIM = "u-victim-000"


def fill(store: Store, users: int, rows: int) -> None:
    batch: list[Interaction] = []
    for u in range(users):
        user = VICTIM if u == users // 2 else f"u{u:07d}"
        batch += [Interaction(user, f"i{(u * 7 + k) % 5000}", "d", float(k)) for k in range(rows)]
        if u % 100 == 0:
            claim = IdempotencyRecord(f"fp{u}", f"t{u}", users=(user,))
            store.claim_idempotency_key(f"k{u}", claim, 3600)
        if len(batch) >= 5000:
            store.add_interactions(batch, 200, source="bench")
            batch = []
    if batch:
        store.add_interactions(batch, 200, source="bench")


def size_mib(directory: Path) -> float:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file()) / 2**20


def holds(directory: Path, needle: bytes) -> bool:
    return any(needle in p.read_bytes() for p in directory.rglob("*") if p.is_file())


def measure(name: str, store: Store, data: Path, users: int, rows: int) -> None:
    t0 = time.perf_counter()
    fill(store, users, rows)
    fill_s = time.perf_counter() - t0
    before = size_mib(data)
    t0 = time.perf_counter()
    store.erase_user(VICTIM, time.time())
    erase_ms = (time.perf_counter() - t0) * 1000
    held = holds(data, VICTIM.encode())
    t0 = time.perf_counter()
    state = store.purge_erased(0)
    call_ms = (time.perf_counter() - t0) * 1000
    states = [state]
    while state == "waiting" and time.perf_counter() - t0 < 300:
        time.sleep(0.1)  # as the service's sync thread does: ask again (an automatic
        state = store.purge_erased(0)  # rewrite that forked before the erasure was running)
        states.append(state)
    if isinstance(store, RedisStore):  # the rewrite runs in a child process
        while time.perf_counter() - t0 < 300:
            info = store._r.info("persistence")
            if not info["aof_rewrite_in_progress"] and not info["aof_rewrite_scheduled"]:
                break
            time.sleep(0.005)
    gone_s = time.perf_counter() - t0
    while holds(data, VICTIM.encode()) and time.perf_counter() - t0 < 300:
        time.sleep(0.01)  # the old AOF files are deleted just after the rewrite
    print(
        f"| {name} | {users * rows:,} | {fill_s:.1f} | {before:.1f} | {erase_ms:.1f} "
        f"| {'yes' if held else 'no'} | {states[0]}{' then ' + state if len(states) > 1 else ''} "
        f"| {call_ms:.1f} | {gone_s:.2f} "
        f"| {'no' if not holds(data, VICTIM.encode()) else 'YES'} | {size_mib(data):.1f} |"
    )


def secure_delete_cost(users: int, rows: int, rounds: int) -> None:
    """Interaction writes with ``secure_delete`` on (the store's setting) and off, the
    history capped at ``rows // 2`` so every batch also deletes rows; alternated rounds."""
    print("\n| secure_delete | round | rows written | s | rows/s |")
    print("|---|---:|---:|---:|---:|")
    for r in range(rounds):
        for mode in ("ON", "OFF"):
            with tempfile.TemporaryDirectory() as tmp:
                store = SQLiteStore(Path(tmp) / "state.db")
                store._conn().execute(f"PRAGMA secure_delete={mode}")  # this thread's
                batch = [
                    Interaction(f"u{u}", f"i{(u * 7 + k) % 5000}", "d", float(k))
                    for u in range(users)
                    for k in range(rows)
                ]
                t0 = time.perf_counter()
                for start in range(0, len(batch), 1000):
                    store.add_interactions(batch[start : start + 1000], max(1, rows // 2))
                took = time.perf_counter() - t0
                store.close()
            print(f"| {mode} | {r} | {len(batch):,} | {took:.2f} | {len(batch) / took:,.0f} |")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--users", type=int, default=100000)
    p.add_argument("--rows", type=int, default=10)
    p.add_argument(
        "--secure-delete-rounds", type=int, default=0, help="also time writes with it off"
    )
    args = p.parse_args()
    if args.secure_delete_rounds:
        secure_delete_cost(args.users, args.rows, args.secure_delete_rounds)
        return 0
    print(
        "| store | rows | fill s | files MiB | erase ms | id in files after erase "
        "| purge | purge call ms | purge complete, s | id left | files MiB after |"
    )
    print("|---|---:|---:|---:|---:|---|---|---:|---:|---|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        sqlite = SQLiteStore(Path(tmp) / "state.db")
        try:
            measure("sqlite", sqlite, Path(tmp), args.users, args.rows)
        finally:
            sqlite.close()
    with RedisServer() as server:
        redis_store = RedisStore(server.url)
        try:
            measure("redis", redis_store, server.data_dir, args.users, args.rows)
        finally:
            redis_store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
