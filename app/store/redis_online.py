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

A record queued before its user's erasure and written after it must not stay: the writer
reads the erasure records before writing, and again after, deleting what it wrote for a
user erased in between (the erasure deletes every record already in ``recsuser``).
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

    def _rec(self, rec_id: str) -> str:
        return f"{self.prefix}rec:{rec_id}"

    def _recs_user(self, user_id: str) -> str:
        return f"{self.prefix}recsuser:{user_id}"

    def _onl(self, version: str, domain: str, kind: str = "onl") -> str:
        return f"{self.prefix}{kind}:{quote(version, safe='')}:{quote(domain, safe='')}"

    def _onl_hour(self, version: str, domain: str, hour: int) -> str:
        return f"{self._onl(version, domain, 'onlhour')}:{hour}"

    def _erased_at(self, records: Sequence[RecommendationRecord]) -> dict[str, float]:
        users = sorted({r.user_id for r in records if r.user_id is not None})
        if not users:
            return {}
        found: Any = self._r.hmget(f"{self.prefix}erasures", [erasure_key(u) for u in users])
        return {u: float(t) for u, t in zip(users, found, strict=True) if t is not None}

    @staticmethod
    def _not_erased(
        records: Sequence[RecommendationRecord], erased: dict[str, float]
    ) -> list[RecommendationRecord]:
        return [
            r for r in records if r.user_id is None or erased.get(r.user_id, -1.0) < r.created_at
        ]

    def put_recommendations(
        self, records: Sequence[RecommendationRecord], ttl_s: float, max_records: int
    ) -> int:
        if not records:
            return 0
        now = time.time()
        ttl_ms = max(1, int(ttl_s * 1000))
        index = f"{self.prefix}recs"
        with self._errors():
            kept = self._not_erased(records, self._erased_at(records))
            pipe = self._r.pipeline(transaction=True)
            for r in kept:
                key = self._rec(r.recommendation_id)
                pipe.hset(key, "r", r.encode())
                pipe.pexpire(key, ttl_ms)
                if r.user_id is not None:
                    pipe.sadd(self._recs_user(r.user_id), r.recommendation_id)
                    pipe.pexpire(self._recs_user(r.user_id), ttl_ms)
            if kept:
                pipe.zadd(index, {r.recommendation_id: r.created_at for r in kept})
            pipe.zremrangebyscore(index, "-inf", now - ttl_s)
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
            pipe.zcard(index)
            replies = pipe.execute()
            over = int(replies[-1]) - int(max_records)
            if over > 0:
                popped: Any = self._r.zpopmin(index, over)
                self._r.delete(*[self._rec(as_str(m)) for m, _ in popped])
            # an erasure between the first read and the write (module docstring)
            erased = self._erased_at(kept)
            dropped = {r.recommendation_id for r in kept} - {
                r.recommendation_id for r in self._not_erased(kept, erased)
            }
            if dropped:
                self._r.delete(*[self._rec(i) for i in dropped])
                kept = [r for r in kept if r.recommendation_id not in dropped]
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
