"""The SQLite store's served recommendations, their feedback and the online counters
(tables in app/store/sqlite_db.py; what is counted: app/store/online.py). A mixin of
:class:`~app.store.sqlite.SQLiteStore`: every method is one transaction.

Bounds: expired records are deleted by each write of new ones (``expires_at`` index), and
records beyond ``max_records`` by their insertion order (``seq``: deleted rows leave gaps,
so at most ``max_records`` remain); hourly counters older than ``HOURS_KEPT`` go too.
"""

from __future__ import annotations

import sqlite3
import time
from collections import Counter
from collections.abc import Collection, Sequence

from app.store.base import erasure_key
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
from app.store.sqlite_db import SQLiteDatabase

_ADD = " ON CONFLICT DO UPDATE SET value = value + excluded.value"


def _add_counts(
    conn: sqlite3.Connection, version: str, domain: str, hour: int, delta: dict[str, float]
) -> None:
    conn.executemany(
        "INSERT INTO online_counts (version, domain, name, value) VALUES (?, ?, ?, ?)" + _ADD,
        [(version, domain, name, v) for name, v in delta.items()],
    )
    conn.executemany(
        "INSERT INTO online_hourly (version, domain, hour, name, value) VALUES (?, ?, ?, ?, ?)"
        + _ADD,
        [(version, domain, hour, name, v) for name, v in delta.items()],
    )


class SQLiteOnline(SQLiteDatabase):
    """Served recommendations and feedback on the store's file."""

    def put_recommendations(
        self, records: Sequence[RecommendationRecord], ttl_s: float, max_records: int
    ) -> int:
        if not records:
            return 0
        now = time.time()

        def tx(conn: sqlite3.Connection) -> int:
            erased: dict[str, float] = {}
            for user in {r.user_id for r in records if r.user_id is not None}:
                row = conn.execute(
                    "SELECT erased_at FROM erasures WHERE user_key = ?", (erasure_key(user),)
                ).fetchone()
                if row is not None:
                    erased[user] = float(row[0])
            kept = [
                r
                for r in records
                if r.user_id is None or erased.get(r.user_id, -1.0) < r.created_at
            ]
            conn.executemany(
                "INSERT OR IGNORE INTO recommendations (id, user_id, expires_at, record)"
                " VALUES (?, ?, ?, ?)",
                [(r.recommendation_id, r.user_id, now + ttl_s, r.encode()) for r in kept],
            )
            for (version, domain, hour), n in recorded_counts(kept).items():
                _add_counts(conn, version, domain, hour, {"recommendations": float(n)})
            sizes = {(r.version, r.domain): r.catalogue_size for r in kept}
            conn.executemany(
                "INSERT OR REPLACE INTO online_counts (version, domain, name, value)"
                " VALUES (?, ?, '~catalogue', ?)",
                [(v, d, n) for (v, d), n in sizes.items()],
            )
            conn.executemany(
                "INSERT OR IGNORE INTO online_shown (version, domain, item_id) VALUES (?, ?, ?)",
                {(r.version, r.domain, i) for r in kept for i, _ in r.items},
            )
            conn.execute("DELETE FROM recommendations WHERE expires_at <= ?", (now,))
            conn.execute(
                "DELETE FROM recommendations WHERE seq <= "
                "(SELECT max(seq) FROM recommendations) - ?",
                (int(max_records),),
            )
            conn.execute(
                "DELETE FROM online_hourly WHERE hour < ?", (hour_of(now) - HOURS_KEPT * HOUR_S,)
            )
            return len(kept)

        return self._tx(tx, write=True)

    @staticmethod
    def _read_record(conn: sqlite3.Connection, rec_id: str) -> StoredRecommendation | None:
        row = conn.execute(
            "SELECT record, feedback FROM recommendations WHERE id = ? AND expires_at > ?",
            (rec_id, time.time()),
        ).fetchone()
        if row is None:
            return None
        record = RecommendationRecord.decode(rec_id, row[0])
        return StoredRecommendation(record, FeedbackState.decode(row[1]))

    def get_recommendation(self, recommendation_id: str) -> StoredRecommendation | None:
        return self._tx(lambda c: self._read_record(c, recommendation_id), write=False)

    def add_feedback(
        self,
        recommendation_id: str,
        events: Sequence[tuple[str, str]],
        positive: Collection[str],
    ) -> list[int] | None:
        def tx(conn: sqlite3.Connection) -> list[int] | None:
            found = self._read_record(conn, recommendation_id)
            if found is None:
                return None
            record, state = found.record, found.feedback
            delta, new = apply_feedback(record, state, events, positive)
            if not new:
                return new
            conn.execute(
                "UPDATE recommendations SET feedback = ? WHERE id = ?",
                (state.encode(), recommendation_id),
            )
            _add_counts(conn, record.version, record.domain, hour_of(record.created_at), delta)
            return new

        return self._tx(tx, write=True)

    def online_versions(self) -> list[tuple[str, str]]:
        rows = self._tx(
            lambda c: c.execute(
                "SELECT DISTINCT version, domain FROM online_counts ORDER BY version, domain"
            ).fetchall(),
            write=False,
        )
        return [(str(v), str(d)) for v, d in rows]

    def online_counts(self, version: str, domain: str) -> OnlineCounts:
        def tx(conn: sqlite3.Connection) -> OnlineCounts:
            values = dict(
                conn.execute(
                    "SELECT name, value FROM online_counts WHERE version = ? AND domain = ?",
                    (version, domain),
                ).fetchall()
            )
            shown = conn.execute(
                "SELECT count(*) FROM online_shown WHERE version = ? AND domain = ?",
                (version, domain),
            ).fetchone()[0]
            size = int(values.pop("~catalogue", 0))
            return OnlineCounts.of(version, domain, values, int(shown), size)

        return self._tx(tx, write=False)

    def online_hourly(self, version: str, domain: str, since: float) -> list[HourCounts]:
        rows = self._tx(
            lambda c: c.execute(
                "SELECT hour, name, value FROM online_hourly"
                " WHERE version = ? AND domain = ? AND hour >= ? ORDER BY hour",
                (version, domain, hour_of(since)),
            ).fetchall(),
            write=False,
        )
        by_hour: dict[int, Counter[str]] = {}
        for hour, name, value in rows:
            by_hour.setdefault(int(hour), Counter())[name] += value
        return [
            HourCounts(h, OnlineCounts.of(version, domain, values)) for h, values in by_hour.items()
        ]
