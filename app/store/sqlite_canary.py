"""The canary announcement in SQLite (app/lifecycle/canary.py): one row of ``canary``;
the decision is one conditional UPDATE, so exactly one caller records it."""

from __future__ import annotations

import sqlite3

from app.store.base import Canary
from app.store.sqlite_db import SQLiteDatabase


class SQLiteCanary(SQLiteDatabase):
    def set_canary(self, canary: Canary | None) -> None:
        def tx(c: sqlite3.Connection) -> None:
            c.execute("DELETE FROM canary")
            if canary is not None:
                c.execute(
                    "INSERT INTO canary (id, version, share, salt, started_at, decided) "
                    "VALUES (1, ?, ?, ?, ?, ?)",
                    (canary.version, canary.share, canary.salt, canary.started_at,
                     canary.decided or ""),
                )  # fmt: skip

        self._tx(tx, write=True)

    def get_canary(self) -> Canary | None:
        row = self._tx(
            lambda c: c.execute(
                "SELECT version, share, salt, started_at, decided FROM canary WHERE id = 1"
            ).fetchone(),
            write=False,
        )
        if row is None:
            return None
        return Canary(str(row[0]), float(row[1]), str(row[2]), float(row[3]), row[4] or None)

    def decide_canary(self, salt: str, outcome: str) -> bool:
        n = self._tx(
            lambda c: (
                c.execute(
                    "UPDATE canary SET decided = ? WHERE id = 1 AND salt = ? AND decided = ''",
                    (outcome, salt),
                ).rowcount
            ),
            write=True,
        )
        return bool(n)
