"""The Redis store's connection (the base of :class:`~app.store.redis.RedisStore`): the
client, how its errors map to :class:`StoreUnavailable`, and the durability check.

Durability of an acknowledged write is the server's: run Redis with ``appendonly yes`` and
``appendfsync always`` (the constructor logs a warning when the server says otherwise).

Failures: connection errors, timeouts and "server cannot serve" replies (LOADING, MISCONF,
READONLY, OOM...) become :class:`StoreUnavailable`. Socket timeouts are short and the client
does not retry: a retried write whose first attempt did run would be applied twice
(HINCRBY, RPUSH), and the service's answer to a failed write is 503 + Retry-After anyway.
No restart is needed when Redis comes back: the connection pool drops sockets the server
closed and reconnects on the next call.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from app.store.base import StoreUnavailable
from app.store.redis_async import AsyncUserReader
from app.store.redis_layout import as_str

# Logged under the store's public module, as before the connection code moved here.
log = logging.getLogger("app.store.redis")

# Replies meaning "the server is there but cannot serve now", i.e. retry later. redis-py
# maps some codes to classes (LOADING is a ConnectionError subclass already); the others
# stay plain ResponseErrors whose message starts with the code, or, inside a pipeline,
# carries it after "... of pipeline caused error: ".
_UNAVAILABLE_CLASSES: tuple[type[Exception], ...] = (
    redis.exceptions.ReadOnlyError,
    redis.exceptions.OutOfMemoryError,
    redis.exceptions.TryAgainError,
    redis.exceptions.ClusterDownError,
)
_UNAVAILABLE_CODES = re.compile(r"(?:^|error: )(?:MISCONF|MASTERDOWN|BUSY|CLUSTERDOWN)\b")


class RedisConnection:
    """A sync client (``_r``) and an event-loop reader (``_aio``) for the server at ``url``;
    see :class:`~app.store.redis.RedisStore` for the arguments."""

    def __init__(
        self,
        url: str,
        *,
        socket_timeout_s: float,
        connect_timeout_s: float,
        max_connections: int | None,
    ) -> None:
        self.url = url
        self._r = redis.Redis.from_url(
            url,
            socket_timeout=socket_timeout_s,
            socket_connect_timeout=connect_timeout_s,
            # No automatic retries: see the module docstring (double-applied writes).
            retry=Retry(NoBackoff(), 0),
            retry_on_timeout=False,
            decode_responses=False,
            max_connections=max_connections,
        )
        self._aio = AsyncUserReader(
            url,
            timeout_s=socket_timeout_s,
            connect_timeout_s=connect_timeout_s,
            max_connections=max_connections,
        )

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except (redis.ConnectionError, redis.TimeoutError) as err:
            raise StoreUnavailable(f"redis {self._where()}: {err}") from err
        except redis.ResponseError as err:
            if isinstance(err, _UNAVAILABLE_CLASSES) or _UNAVAILABLE_CODES.search(str(err)):
                raise StoreUnavailable(f"redis {self._where()}: {err}") from err
            raise

    def _rewrite_files(self) -> bool:
        """Have the server rewrite its files so they stop holding deleted data: an AOF
        rewrite (when it keeps an AOF; without one there is no log to purge), then a
        snapshot when it also writes RDB snapshots. False when a rewrite that forked
        earlier is still running (the caller tries again later)."""
        info: Any = self._r.info("persistence")
        try:
            if info.get("aof_enabled"):
                self._r.bgrewriteaof()
        except redis.ResponseError as err:
            if "in progress" not in str(err):
                raise
            return False
        self._snapshot_if_configured()
        return True

    def _snapshot_if_configured(self) -> None:
        """BGSAVE (after the rewrite) when the server also writes RDB snapshots: the last
        snapshot holds the erased data too. CONFIG may be disabled (managed Redis): then
        the server's own save schedule bounds it (docs/service.md)."""
        try:
            config: Any = self._r.config_get("save")
        except redis.ResponseError:
            return
        if config.get(b"save", b"").strip():
            self._r.bgsave(schedule=True)

    def _where(self) -> str:
        kw = self._r.connection_pool.connection_kwargs
        if "path" in kw:
            return str(kw["path"])
        return f"{kw.get('host', '?')}:{kw.get('port', '?')}"

    def _warn_if_not_durable(self) -> None:
        """Log when the server would lose acknowledged writes on a crash (best effort:
        CONFIG may be disabled on managed Redis, and the server may be down now)."""
        try:
            cfg: Any = self._r.config_get("append*")
        except redis.RedisError:
            return
        conf = {as_str(k): as_str(v) for k, v in cfg.items()}
        if conf.get("appendonly") != "yes" or conf.get("appendfsync") != "always":
            log.warning(
                "redis %s: appendonly=%s appendfsync=%s; acknowledged writes can be lost on a"
                " crash (use appendonly yes + appendfsync always)",
                self._where(),
                conf.get("appendonly"),
                conf.get("appendfsync"),
            )

    def ping(self) -> bool:
        try:
            with self._errors():
                return bool(self._r.ping())
        except (StoreUnavailable, redis.RedisError):
            return False

    def close(self) -> None:
        self._r.close()
        self._r.connection_pool.disconnect()
