"""The one store read of a recommend, done on the event loop (``redis.asyncio`` + hiredis).

A recommend for a named user needs the erasure flag and the stored history: one MULTI/EXEC
round trip (HEXISTS + one LRANGE per domain the model serves), so both come from the same
instant. Awaited on the loop, it needs no worker thread (the anyio pool hop and the loop
wake-up a request paid before); docs/results/serve-steps/hotpath.md has the measurements.

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

from app.store.base import StoreUnavailable


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
            # No retries, like the sync client (app/store/redis.py): a read could be
            # retried safely, but a slow store must cost a request one timeout, not three.
            "retry": Retry(NoBackoff(), 0),
            "retry_on_timeout": False,
            "decode_responses": False,
            "max_connections": max_connections or 64,
            "timeout": timeout_s,  # waiting for a free connection
        }
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: aioredis.Redis | None = None

    def _client_for_loop(self) -> aioredis.Redis:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            # A blocking pool: more concurrent reads than connections wait for one (within
            # the read's timeout) instead of failing as "store unavailable".
            pool = aioredis.BlockingConnectionPool.from_url(self.url, **self._kwargs)
            self._client = aioredis.Redis(connection_pool=pool)
            self._loop = loop
        return self._client

    async def read(
        self, erased_key: str, user_id: str, history_keys: Sequence[str]
    ) -> tuple[bool, list[list[bytes]]]:
        """(HEXISTS erased_key user_id, [LRANGE key 0 -1 for each history key])."""
        client = self._client_for_loop()
        try:
            async with asyncio.timeout(self.timeout_s):
                async with client.pipeline(transaction=True) as pipe:
                    pipe.hexists(erased_key, user_id)
                    for key in history_keys:
                        pipe.lrange(key, 0, -1)
                    replies: list[Any] = await pipe.execute()
        except TimeoutError as err:  # asyncio.timeout; redis' own errors: the caller's
            raise StoreUnavailable(f"redis: user read timed out after {self.timeout_s} s") from err
        return bool(replies[0]), replies[1:]
