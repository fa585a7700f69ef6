"""The Redis store's served recommendations, their feedback and the online counters (what
is counted: app/store/online.py). A base class of :class:`~app.store.redis.RedisStore`.

Keys (``P`` = prefix; version and domain percent-encoded, so they hold no ``:``):

* ``P rec:<id>``            hash ``r`` (the record) and ``f`` (its feedback), expiring
  with the record's TTL
* ``P recs``                sorted set id -> time: the cap on the number kept (the
  oldest are deleted beyond it) and the expired ones' entries pruned
* ``P recsuser:<user>``     set of the user's record ids (erasure), expiring with the
  newest of them
* ``P online``              set of ``<version>\\0<domain>`` with counters
* ``P onl:<v>:<d>``         hash counter name -> value (``~catalogue``: catalogue size)
* ``P onlhour:<v>:<d>:<h>`` the same per hour of the recommendations, expiring after
  ``HOURS_KEPT``
* ``P onlshown:<v>:<d>``    set of the item ids shown (coverage; bounded by the catalogue)

A record queued before its user's erasure and written after it must not stay: the write is
one Lua script (``PUT_RECORDS``) that skips users erased at or after the record's time, so
an erasure either comes first (the record is not written) or finds it in ``recsuser``.
Feedback is a WATCH/MULTI on the record: read it, apply the events in Python, write it and
the counters in one transaction (retried when the record changed meanwhile).
"""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence
from typing import Any
from urllib.parse import quote

import redis

from app.store.base import StoreUnavailable, erasure_key
from app.store.online import (
    HOUR_S,
    HOURS_KEPT,
    FeedbackState,
    HourCounts,
    OnlineCounts,
    RecommendationRecord,
    StoredRecommendation,
    apply_feedback,
    hour_of,
    recorded_counts,
)
from app.store.redis_conn import RedisConnection
from app.store.redis_layout import as_str

WATCH_TRIES = 20

# ARGV: prefix, TTL ms, expired-before time, the most records kept, then per record: id,
# user id ('' = none), the user's erasure pseudonym, created_at, the encoded record. Keys
# are built from the prefix (one server, as for the idempotency records the erasure
# deletes). Writes the records of users not erased at or after their time (checked here,
# in the same atomic step, so an erasure is either seen or finds the record in the user's
# set), prunes the index (expired, over the cap) and returns one '1'/'0' per record.
PUT_RECORDS = """
local prefix, ttl, cap = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[4])
local index, flags = prefix .. 'recs', {}
for i = 5, #ARGV, 5 do
  local id, user, at = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 3])
  local keep = true
  if user ~= '' then
    local t = redis.call('HGET', prefix .. 'erasures', ARGV[i + 2])
      or redis.call('HGET', prefix .. 'erased', user)
    if t and tonumber(t) >= at then keep = false end
  end
  if keep then
    local key = prefix .. 'rec:' .. id
    redis.call('HSET', key, 'r', ARGV[i + 4])
    redis.call('PEXPIRE', key, ttl)
    redis.call('ZADD', index, at, id)
    if user ~= '' then
      local set = prefix .. 'recsuser:' .. user
      redis.call('SADD', set, id)
      redis.call('PEXPIRE', set, ttl)
    end
  end
  flags[#flags + 1] = keep and '1' or '0'
end
redis.call('ZREMRANGEBYSCORE', index, '-inf', ARGV[3])
local over = redis.call('ZCARD', index) - cap
if over > 0 then
  local popped = redis.call('ZPOPMIN', index, over)
  for k = 1, #popped, 2 do redis.call('DEL', prefix .. 'rec:' .. popped[k]) end
end
return table.concat(flags)
"""

# KEYS: the user's recsuser set. ARGV: the rec key prefix. Deletes every record it names.
DROP_USER_RECORDS = """
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  redis.call('DEL', ARGV[1] .. id)
end
redis.call('DEL', KEYS[1])
return 1
"""


class RedisOnline(RedisConnection):
    """Served recommendations and feedback on Redis (module docstring)."""

    prefix: str

    def _init_online(self) -> None:
        self._put_recs = self._r.register_script(PUT_RECORDS)

    def _rec(self, rec_id: str) -> str:
        return f"{self.prefix}rec:{rec_id}"

    def _recs_user(self, user_id: str) -> str:
        return f"{self.prefix}recsuser:{user_id}"

    def _onl(self, version: str, domain: str, kind: str = "onl") -> str:
        return f"{self.prefix}{kind}:{quote(version, safe='')}:{quote(domain, safe='')}"

    def _onl_hour(self, version: str, domain: str, hour: int) -> str:
        return f"{self._onl(version, domain, 'onlhour')}:{hour}"

    def put_recommendations(
        self, records: Sequence[RecommendationRecord], ttl_s: float, max_records: int
    ) -> int:
        if not records:
            return 0
        now = time.time()
        args: list[Any] = [self.prefix, max(1, int(ttl_s * 1000)), repr(now - ttl_s), max_records]
        for r in records:
            user = r.user_id or ""
            pseudonym = erasure_key(user) if user else ""
            args += [r.recommendation_id, user, pseudonym, repr(r.created_at), r.encode()]
        with self._errors():
            flags: Any = self._put_recs(args=args)
            kept = [r for r, flag in zip(records, as_str(flags), strict=True) if flag == "1"]
            pipe = self._r.pipeline(transaction=True)
            for (version, domain, hour), n in recorded_counts(kept).items():
                self._count(pipe, version, domain, hour, {"recommendations": float(n)})
            shown: dict[tuple[str, str], set[str]] = {}
            sizes: dict[tuple[str, str], int] = {}
            for r in kept:
                shown.setdefault((r.version, r.domain), set()).update(i for i, _ in r.items)
                sizes[(r.version, r.domain)] = r.catalogue_size
            for (version, domain), items in shown.items():
                pipe.hset(self._onl(version, domain), "~catalogue", sizes[(version, domain)])
                if items:
                    pipe.sadd(self._onl(version, domain, "onlshown"), *items)
            pipe.execute()
        return len(kept)

    def _count(
        self, pipe: Any, version: str, domain: str, hour: int, delta: dict[str, float]
    ) -> None:
        pipe.sadd(f"{self.prefix}online", f"{version}\0{domain}")
        hourly = self._onl_hour(version, domain, hour)
        for name, value in delta.items():
            pipe.hincrbyfloat(self._onl(version, domain), name, value)
            pipe.hincrbyfloat(hourly, name, value)
        pipe.expire(hourly, HOURS_KEPT * HOUR_S)

    def get_recommendation(self, recommendation_id: str) -> StoredRecommendation | None:
        with self._errors():
            record, feedback = self._r.hmget(self._rec(recommendation_id), ["r", "f"])
        if record is None:
            return None
        return StoredRecommendation(
            RecommendationRecord.decode(recommendation_id, record), FeedbackState.decode(feedback)
        )

    def add_feedback(
        self,
        recommendation_id: str,
        events: Sequence[tuple[str, str]],
        positive: Collection[str],
    ) -> list[int] | None:
        key = self._rec(recommendation_id)
        with self._errors(), self._r.pipeline(transaction=True) as pipe:
            for _ in range(WATCH_TRIES):
                try:
                    pipe.watch(key)
                    raw, feedback = pipe.hmget(key, ["r", "f"])
                    if raw is None:
                        pipe.reset()
                        return None
                    record = RecommendationRecord.decode(recommendation_id, raw)
                    state = FeedbackState.decode(feedback)
                    delta, new = apply_feedback(record, state, events, positive)
                    if not new:
                        pipe.reset()
                        return new
                    pipe.multi()
                    pipe.hset(key, "f", state.encode())
                    hour = hour_of(record.created_at)
                    self._count(pipe, record.version, record.domain, hour, delta)
                    pipe.execute()
                    return new
                except redis.WatchError:
                    continue
        raise StoreUnavailable(f"redis {self._where()}: recommendation keeps changing")

    def erase_recommendations(self, user_id: str) -> None:
        """Delete the records of ``user_id`` (part of ``erase_user``)."""
        with self._errors():
            self._r.eval(DROP_USER_RECORDS, 1, self._recs_user(user_id), f"{self.prefix}rec:")

    def online_versions(self) -> list[tuple[str, str]]:
        with self._errors():
            members: Any = self._r.smembers(f"{self.prefix}online")
        pairs = [as_str(m).split("\0", 1) for m in members]
        return sorted((v, d) for v, d in pairs)

    def online_counts(self, version: str, domain: str) -> OnlineCounts:
        with self._errors():
            pipe = self._r.pipeline(transaction=True)
            pipe.hgetall(self._onl(version, domain))
            pipe.scard(self._onl(version, domain, "onlshown"))
            values, shown = pipe.execute()
        named = {as_str(k): float(v) for k, v in values.items()}
        size = int(named.pop("~catalogue", 0))
        return OnlineCounts.of(version, domain, named, int(shown), size)

    def online_hourly(self, version: str, domain: str, since: float) -> list[HourCounts]:
        now = hour_of(time.time())
        hours = list(range(max(hour_of(since), now - HOURS_KEPT * HOUR_S), now + 1, HOUR_S))
        with self._errors():
            pipe = self._r.pipeline(transaction=False)
            for hour in hours:
                pipe.hgetall(self._onl_hour(version, domain, hour))
            replies = pipe.execute()
        return [
            HourCounts(
                h, OnlineCounts.of(version, domain, {as_str(k): float(v) for k, v in r.items()})
            )
            for h, r in zip(hours, replies, strict=True)
            if r
        ]
