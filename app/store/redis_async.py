"""The one store read of a recommend, done on the event loop (``redis.asyncio`` + hiredis).

A recommend for a named user needs the erasure flag and the stored history: one round trip
running a small Lua script (HEXISTS + one LRANGE per domain the model serves), so both come
from the same instant (a script runs atomically, like MULTI/EXEC). One command and one reply
instead of a MULTI pipeline's n + 3 halves the client's CPU per read, and the event loop is
the busiest thread of a worker (bench/redis_user_read.py, docs/results/serve-steps/batch.md).
Awaited on the loop, it needs no worker thread (the anyio pool hop and the loop wake-up a
request paid before); docs/results/serve-steps/hotpath.md has the measurements.

The client is bound to the event loop it was made on (redis.asyncio's connections are), so
one is made per running loop: a uvicorn worker has one loop; tests that run several apps in
turn get a fresh client each. The whole read is bounded by ``timeout_s``; a timeout or a
connection error is :class:`StoreUnavailable` (``RedisStore`` maps redis' errors as for its
other calls; the recommend degrades to the bundle history).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript

from app.store.base import StoreUnavailable

READ_USER = """
local out = {redis.call('HEXISTS', KEYS[1], ARGV[1]) + redis.call('HEXISTS', KEYS[2], ARGV[2])}
for i = 3, #KEYS do out[i - 1] = redis.call('LRANGE', KEYS[i], 0, -1) end
return out
"""
"""KEYS: the erasure hashes (by pseudonym, by id: app/store/redis_layout.py), then one
history list per domain; ARGV: the pseudonym, the user id."""


class AsyncUserReader:
    def __init__(
        self,
        url: str,
        *,
        timeout_s: float,
        connect_timeout_s: float,
        max_connections: int | None,
    ) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self._kwargs: dict[str, Any] = {
            "socket_timeout": timeout_s,
            "socket_connect_timeout": connect_timeout_s,
            # No retries, like the sync client (app/store/redis_conn.py): a read could be
            # retried safely, but a slow store must cost a request one timeout, not three.
            "retry": Retry(NoBackoff(), 0),
            "retry_on_timeout": False,
            "decode_responses": False,
            "max_connections": max_connections or 64,
            "timeout": timeout_s,  # waiting for a free connection
        }
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: aioredis.Redis | None = None
        self._script: AsyncScript | None = None

    def _script_for_loop(self) -> AsyncScript:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            # A blocking pool: more concurrent reads than connections wait for one (within
            # the read's timeout) instead of failing as "store unavailable".
            pool = aioredis.BlockingConnectionPool.from_url(self.url, **self._kwargs)
            self._client = aioredis.Redis(connection_pool=pool)
            # EVALSHA, loading the script again when the server answers NOSCRIPT (a
            # restarted or flushed server)
            self._script = self._client.register_script(READ_USER)
            self._loop = loop
        assert self._script is not None
        return self._script

    async def read(
        self,
        erased: tuple[str, str],
        erased_by_id: tuple[str, str],
        history_keys: Sequence[str],
    ) -> tuple[bool, list[list[bytes]]]:
        """(HEXISTS of either (hash, field) pair, [LRANGE key 0 -1 for each history key])."""
        script = self._script_for_loop()
        keys = [erased[0], erased_by_id[0], *history_keys]
        try:
            async with asyncio.timeout(self.timeout_s):
                replies: list[Any] = await script(keys=keys, args=[erased[1], erased_by_id[1]])
        except TimeoutError as err:  # asyncio.timeout; redis' own errors: the caller's
            raise StoreUnavailable(f"redis: user read timed out after {self.timeout_s} s") from err
        return bool(replies[0]), replies[1:]
