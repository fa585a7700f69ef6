"""The recommend's one Redis read, client CPU per call: a MULTI/EXEC pipeline (HEXISTS + one
LRANGE per domain) against the Lua script the service runs (app/store/redis_async.py).

    python bench/redis_user_read.py --calls 2000 --rounds 3

A private Redis server (bench/redis_server.py); one user with 20 stored items in each of 3
domains; ``redis.asyncio`` + hiredis on one event loop, one call at a time. Prints, per
round, the client process's CPU time and the wall time per call for each variant.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import redis
import redis.asyncio as aioredis
from redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from app.store.redis_async import READ_USER  # noqa: E402

DOMAINS = ("arts", "food", "office")


async def measure(url: str, calls: int, rounds: int) -> None:
    client = aioredis.Redis.from_url(url)
    keys = [f"h:u1:{d}" for d in DOMAINS]
    script = client.register_script(READ_USER)

    async def multi() -> list[object]:
        async with client.pipeline(transaction=True) as pipe:
            pipe.hexists("erasures", "k1")
            pipe.hexists("erased", "u1")
            for key in keys:
                pipe.lrange(key, 0, -1)
            erasures, erased, *lists = await pipe.execute()
            return [erasures + erased, *lists]

    async def lua() -> list[object]:
        return list(await script(keys=["erasures", "erased", *keys], args=["k1", "u1"]))

    assert await multi() == await lua(), "the two reads disagree"
    print("| round | variant | client CPU us/call | wall us/call |")
    print("|---:|---|---:|---:|")
    for r in range(rounds):
        for name, read in (("MULTI pipeline", multi), ("Lua script", lua)):
            cpu, wall = time.process_time(), time.perf_counter()
            for _ in range(calls):
                await read()
            cpu_us = (time.process_time() - cpu) / calls * 1e6
            wall_us = (time.perf_counter() - wall) / calls * 1e6
            print(f"| {r} | {name} | {cpu_us:.0f} | {wall_us:.0f} |")
    await client.aclose()


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    with RedisServer() as server:
        sync = redis.Redis.from_url(server.url)
        for d in DOMAINS:
            sync.rpush(f"h:u1:{d}", *[f"item-{i}".encode() for i in range(20)])
        asyncio.run(measure(server.url, a.calls, a.rounds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
