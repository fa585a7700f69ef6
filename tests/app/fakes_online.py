"""The memory store's served recommendations, feedback and online counters (a base of
``tests.app.fakes.MemoryStore``), following the contract in app/store/base.py."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Collection, Sequence

from app.store.online import (
    FeedbackState,
    HourCounts,
    OnlineCounts,
    RecommendationRecord,
    StoredRecommendation,
    apply_feedback,
    hour_of,
    recorded_counts,
)


class MemoryRecommendations:
    _lock: threading.Lock
    _erased: dict[str, float]

    def _init_recommendations(self) -> None:
        # id -> (record, feedback, expires at), oldest first
        self._recs: dict[str, tuple[RecommendationRecord, FeedbackState, float]] = {}
        self._online: dict[tuple[str, str, int], Counter[str]] = {}  # (version, domain, hour)
        self._shown: dict[tuple[str, str], set[str]] = {}
        self._catalogue: dict[tuple[str, str], int] = {}

    def _erase_recommendations(self, user_id: str) -> None:
        """(Under the lock, in ``erase_user``.)"""
        for rec_id in [k for k, (r, _, _) in self._recs.items() if r.user_id == user_id]:
            del self._recs[rec_id]

    def put_recommendations(
        self, records: Sequence[RecommendationRecord], ttl_s: float, max_records: int
    ) -> int:
        now = time.time()
        with self._lock:
            kept = [
                r
                for r in records
                if r.user_id is None or self._erased.get(r.user_id, -1.0) < r.created_at
            ]
            for r in kept:
                self._recs[r.recommendation_id] = (r, FeedbackState(), now + ttl_s)
                self._shown.setdefault((r.version, r.domain), set()).update(i for i, _ in r.items)
                self._catalogue[(r.version, r.domain)] = r.catalogue_size
            for key, n in recorded_counts(kept).items():
                self._online.setdefault(key, Counter())["recommendations"] += n
            for rec_id in [k for k, (_, _, t) in self._recs.items() if t <= now]:
                del self._recs[rec_id]
            while len(self._recs) > max_records:
                del self._recs[next(iter(self._recs))]
            return len(kept)

    def get_recommendation(self, recommendation_id: str) -> StoredRecommendation | None:
        with self._lock:
            found = self._recs.get(recommendation_id)
            if found is None or found[2] <= time.time():
                return None
            return StoredRecommendation(
                found[0], FeedbackState(set(found[1].seen), found[1].best_rank)
            )

    def add_feedback(
        self,
        recommendation_id: str,
        events: Sequence[tuple[str, str]],
        positive: Collection[str],
    ) -> list[int] | None:
        with self._lock:
            found = self._recs.get(recommendation_id)
            if found is None or found[2] <= time.time():
                return None
            record, state, _ = found
            delta, new = apply_feedback(record, state, events, positive)
            key = (record.version, record.domain, hour_of(record.created_at))
            self._online.setdefault(key, Counter()).update(delta)
            return new

    def online_versions(self) -> list[tuple[str, str]]:
        return sorted({(v, d) for v, d, _ in self._online})

    def online_counts(self, version: str, domain: str) -> OnlineCounts:
        with self._lock:
            total: Counter[str] = Counter()
            for (v, d, _), values in self._online.items():
                if (v, d) == (version, domain):
                    total.update(values)
            shown = len(self._shown.get((version, domain), ()))
            size = self._catalogue.get((version, domain), 0)
        return OnlineCounts.of(version, domain, total, shown, size)

    def online_hourly(self, version: str, domain: str, since: float) -> list[HourCounts]:
        with self._lock:
            return [
                HourCounts(h, OnlineCounts.of(v, d, values))
                for (v, d, h), values in sorted(self._online.items())
                if (v, d) == (version, domain) and h >= hour_of(since)
            ]
