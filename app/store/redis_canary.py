"""The canary announcement in Redis (app/lifecycle/canary.py): one hash, replaced whole;
the decision is one Lua script, so exactly one caller records it."""

from __future__ import annotations

from typing import Any

from app.store.base import Canary
from app.store.redis_conn import RedisConnection
from app.store.redis_layout import DECIDE_CANARY, RedisKeys, as_str


class RedisCanary(RedisConnection):
    keys: RedisKeys

    def set_canary(self, canary: Canary | None) -> None:
        with self._errors():
            if canary is None:
                self._r.delete(self.keys.canary)
                return
            fields: Any = {
                "version": canary.version,
                "share": repr(canary.share),
                "salt": canary.salt,
                "started_at": repr(canary.started_at),
                "decided": canary.decided or "",
            }
            pipe = self._r.pipeline(transaction=True)  # replaced whole: no stale field
            pipe.delete(self.keys.canary)
            pipe.hset(self.keys.canary, mapping=fields)
            pipe.execute()

    def get_canary(self) -> Canary | None:
        with self._errors():
            h: Any = self._r.hgetall(self.keys.canary)
        if not h:
            return None
        return Canary(
            as_str(h[b"version"]),
            float(h[b"share"]),
            as_str(h[b"salt"]),
            float(h[b"started_at"]),
            as_str(h[b"decided"]) or None,
        )

    def decide_canary(self, salt: str, outcome: str) -> bool:
        with self._errors():
            decide = self._r.register_script(DECIDE_CANARY)  # rare: no need to keep it
            return bool(decide(keys=[self.keys.canary], args=[salt, outcome]))
