"""Embedded durable store on one SQLite file: the default for a single machine.

Where the pieces are: the schema, per-thread connections, transactions and their
durability in app/store/sqlite_db.py (the base class); the items' tables and the change
feed in app/store/sqlite_items.py; the export's paged reads in app/store/paging.py;
served recommendations, their feedback and the online counters in
app/store/sqlite_online.py (a base class). Every method below is one transaction (``_tx``).
"""

from __future__ import annotations

import sqlite3
import time
from collections import Counter
from collections.abc import Iterator, Sequence

from app.store import paging
from app.store.base import (
    ErasureRecords,
    IdempotencyRecord,
    Interaction,
    ItemChange,
    Store,
    StoredItem,
    WantedBundle,
    erasure_key,
    pack_vector,
)
from app.store.sqlite_canary import SQLiteCanary
from app.store.sqlite_items import read_items, record_change, write_item
from app.store.sqlite_online import SQLiteOnline


class SQLiteStore(SQLiteCanary, SQLiteOnline, Store):
    """:class:`Store` on a SQLite file (created with its parent directory when missing).

    ``busy_timeout_s`` bounds how long a writer waits for another writer; past it, and on
    I/O errors, methods raise :class:`StoreUnavailable` (the service answers 503).
    """

    # --- items -------------------------------------------------------------------------
    def put_item(self, item: StoredItem) -> int:
        # Encode before the transaction: a bad vector fails without touching the file.
        content = [(m, *pack_vector(v)) for m, v in item.content.items()]
        return self._tx(lambda c: write_item(c, item, content), write=True)

    def get_item(self, item_id: str) -> StoredItem | None:
        found = self._tx(lambda c: read_items(c, "WHERE item_id = ?", (item_id,)), write=False)
        return found[0] if found else None

    def delete_item(self, item_id: str) -> int | None:
        def tx(conn: sqlite3.Connection) -> int | None:
            if conn.execute("DELETE FROM items WHERE item_id = ?", (item_id,)).rowcount == 0:
                return None
            return record_change(conn, item_id, deleted=True)

        return self._tx(tx, write=True)

    def list_items(self) -> list[StoredItem]:
        return self._tx(lambda c: read_items(c, "", ()), write=False)

    def item_changes(self, after_seq: int, limit: int = 1000) -> list[ItemChange]:
        rows = self._tx(
            lambda c: c.execute(
                "SELECT seq, item_id, deleted FROM item_changes WHERE seq > ? ORDER BY seq LIMIT ?",
                (int(after_seq), int(limit)),
            ).fetchall(),
            write=False,
        )
        return [ItemChange(seq=s, item_id=i, deleted=bool(d)) for s, i, d in rows]

    # --- interactions ------------------------------------------------------------------
    def add_interactions(
        self,
        rows: Sequence[Interaction],
        history_cap: int,
        *,
        source: str = "",
        source_cap: int = 0,
    ) -> dict[tuple[str, str], int]:
        if history_cap < 1:
            raise ValueError(f"history_cap must be >= 1, got {history_cap}")
        if not rows:
            return {}
        groups = sorted({(r.user_id, r.domain) for r in rows})
        pairs = sorted({(r.domain, r.item_id, r.user_id) for r in rows})
        counts: Counter[tuple[str, str]] = Counter()

        def tx(conn: sqlite3.Connection) -> None:
            counts.clear()  # the transaction may be retried
            counted: dict[tuple[str, str], int] = {}  # this source's users per item
            for domain, item_id, user_id in pairs:
                if source_cap > 0:
                    if (domain, item_id) not in counted:
                        row = conn.execute(
                            "SELECT count FROM popularity_sources"
                            " WHERE domain = ? AND item_id = ? AND source = ?",
                            (domain, item_id, source),
                        ).fetchone()
                        counted[(domain, item_id)] = int(row[0]) if row else 0
                    if counted[(domain, item_id)] + counts[(domain, item_id)] >= source_cap:
                        continue  # stored in the history below, not counted
                cur = conn.execute(
                    "INSERT OR IGNORE INTO popularity_users (domain, item_id, user_id, source)"
                    " VALUES (?, ?, ?, ?)",
                    (domain, item_id, user_id, source),
                )
                if cur.rowcount:
                    counts[(domain, item_id)] += 1
            # Rows are appended in the order given; "newest" means appended last.
            conn.executemany(
                "INSERT INTO history (user_id, domain, item_id, timestamp) VALUES (?, ?, ?, ?)",
                [(r.user_id, r.domain, r.item_id, float(r.timestamp)) for r in rows],
            )
            # Trim each touched (user, domain) to its newest history_cap rows: delete every
            # row at or below the id of the (cap+1)-th newest (uses the history_user index).
            conn.executemany(
                "DELETE FROM history WHERE user_id = ?1 AND domain = ?2 AND id <= ("
                " SELECT id FROM history WHERE user_id = ?1 AND domain = ?2"
                " ORDER BY id DESC LIMIT 1 OFFSET ?3)",
                [(u, d, history_cap) for u, d in groups],
            )
            conn.executemany(
                "INSERT INTO popularity (domain, item_id, count) VALUES (?, ?, ?)"
                " ON CONFLICT (domain, item_id) DO UPDATE SET count = count + excluded.count",
                [(d, i, n) for (d, i), n in counts.items()],
            )
            conn.executemany(
                "INSERT INTO popularity_sources (domain, item_id, source, count)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (domain, item_id, source)"
                " DO UPDATE SET count = count + excluded.count",
                [(d, i, source, n) for (d, i), n in counts.items()],
            )

        self._tx(tx, write=True)
        return dict(counts)

    def get_history(self, user_id: str) -> dict[str, list[str]]:
        rows = self._tx(
            lambda c: c.execute(
                "SELECT domain, item_id FROM history WHERE user_id = ? ORDER BY domain, id",
                (user_id,),
            ).fetchall(),
            write=False,
        )
        out: dict[str, list[str]] = {}
        for domain, item_id in rows:
            out.setdefault(domain, []).append(item_id)
        return out

    def popularity(self, domain: str) -> dict[str, int]:
        rows = self._tx(
            lambda c: c.execute(
                "SELECT item_id, count FROM popularity WHERE domain = ?", (domain,)
            ).fetchall(),
            write=False,
        )
        return {i: int(n) for i, n in rows}

    # --- export (paged reads: app/store/paging.py) ---------------------------------------
    def iter_interactions(self, batch: int = 1000) -> Iterator[Interaction]:
        return paging.sqlite_interactions(self._read, batch)

    def iter_items(self, batch: int = 500) -> Iterator[StoredItem]:
        return paging.sqlite_items(self._read, batch)

    def interaction_count(self) -> int:
        # AUTOINCREMENT's high-water mark = rows ever inserted into history
        row = self._tx(
            lambda c: c.execute(
                "SELECT seq FROM sqlite_sequence WHERE name = 'history'"
            ).fetchone(),
            write=False,
        )
        return int(row[0]) if row else 0

    # --- user erasure ------------------------------------------------------------------
    def erase_user(self, user_id: str, erased_at: float) -> dict[tuple[str, str], int]:
        def tx(conn: sqlite3.Connection) -> dict[tuple[str, str], int]:
            rows = conn.execute(
                "SELECT domain, item_id, source FROM popularity_users WHERE user_id = ?",
                (user_id,),
            ).fetchall()
            pairs = [(d, i) for d, i, _ in rows]
            conn.execute("DELETE FROM popularity_users WHERE user_id = ?", (user_id,))
            conn.executemany(
                "UPDATE popularity SET count = count - 1 WHERE domain = ? AND item_id = ?", pairs
            )
            conn.executemany(
                "DELETE FROM popularity WHERE domain = ? AND item_id = ? AND count <= 0", pairs
            )
            conn.executemany(
                "UPDATE popularity_sources SET count = count - 1"
                " WHERE domain = ? AND item_id = ? AND source = ?",
                rows,
            )
            conn.executemany(
                "DELETE FROM popularity_sources"
                " WHERE domain = ? AND item_id = ? AND source = ? AND count <= 0",
                rows,
            )
            conn.execute("DELETE FROM history WHERE user_id = ?", (user_id,))
            conn.execute("DELETE FROM recommendations WHERE user_id = ?", (user_id,))
            # the records of keyed requests that named the user (their index rows cascade)
            conn.execute(
                "DELETE FROM idempotency WHERE key IN"
                " (SELECT key FROM idempotency_users WHERE user_id = ?)",
                (user_id,),
            )
            conn.execute(
                "INSERT OR REPLACE INTO erasures (user_key, erased_at) VALUES (?, ?)",
                (erasure_key(user_id), float(erased_at)),
            )
            return {pair: 1 for pair in pairs}

        out = self._tx(tx, write=True)
        self._erased_now()
        return out

    def is_erased(self, user_id: str) -> bool:
        row = self._tx(
            lambda c: c.execute(
                "SELECT 1 FROM erasures WHERE user_key = ?", (erasure_key(user_id),)
            ).fetchone(),
            write=False,
        )
        return row is not None

    def erased_users(self) -> ErasureRecords:
        rows = self._tx(
            lambda c: c.execute("SELECT user_key, erased_at FROM erasures").fetchall(),
            write=False,
        )
        return ErasureRecords({k: float(t) for k, t in rows})

    # --- bundle version ----------------------------------------------------------------
    def set_bundle_version(self, version: str, announced_at: float) -> None:
        self._tx(
            lambda c: c.execute(
                "INSERT OR REPLACE INTO bundle_version (id, version, announced_at) "
                "VALUES (1, ?, ?)",
                (version, float(announced_at)),
            ),
            write=True,
        )

    def get_bundle_version(self) -> WantedBundle | None:
        row = self._tx(
            lambda c: c.execute(
                "SELECT version, announced_at FROM bundle_version WHERE id = 1"
            ).fetchone(),
            write=False,
        )
        return None if row is None else WantedBundle(str(row[0]), float(row[1]))

    # --- idempotency keys --------------------------------------------------------------
    def claim_idempotency_key(
        self, key: str, claim: IdempotencyRecord, ttl_s: float
    ) -> IdempotencyRecord | None:
        def tx(conn: sqlite3.Connection) -> IdempotencyRecord | None:
            now = time.time()
            conn.execute("DELETE FROM idempotency WHERE expires_at <= ?", (now,))
            row = conn.execute(
                "SELECT fingerprint, token, status, body FROM idempotency WHERE key = ?", (key,)
            ).fetchone()
            if row is not None:
                return IdempotencyRecord(row[0], row[1], int(row[2]), bytes(row[3]))
            conn.execute(
                "INSERT INTO idempotency (key, fingerprint, token, status, body, expires_at)"
                " VALUES (?, ?, ?, 0, ?, ?)",
                (key, claim.fingerprint, claim.token, claim.body, now + ttl_s),
            )
            conn.executemany(
                "INSERT OR IGNORE INTO idempotency_users (user_id, key) VALUES (?, ?)",
                [(u, key) for u in sorted(set(claim.users))],
            )
            return None

        return self._tx(tx, write=True)

    def complete_idempotency_key(
        self, key: str, claim: IdempotencyRecord, answer: IdempotencyRecord, ttl_s: float
    ) -> bool:
        def tx(conn: sqlite3.Connection) -> bool:
            # Written unless another live claim holds the key (ours expired and was taken).
            taken = conn.execute(
                "SELECT 1 FROM idempotency WHERE key = ? AND token != ? AND expires_at > ?",
                (key, claim.token, time.time()),
            ).fetchone()
            if taken is not None:
                return False
            # An upsert, not INSERT OR REPLACE: a replace deletes the row first, which would
            # cascade to the record's idempotency_users rows.
            conn.execute(
                "INSERT INTO idempotency (key, fingerprint, token, status, body, expires_at)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET"
                " fingerprint = excluded.fingerprint, token = excluded.token,"
                " status = excluded.status, body = excluded.body,"
                " expires_at = excluded.expires_at",
                (
                    key,
                    answer.fingerprint,
                    answer.token,
                    answer.status,
                    answer.body,
                    time.time() + ttl_s,
                ),
            )
            conn.executemany(
                "INSERT OR IGNORE INTO idempotency_users (user_id, key) VALUES (?, ?)",
                [(u, key) for u in sorted(set(answer.users))],
            )
            return True

        return self._tx(tx, write=True)

    def release_idempotency_key(self, key: str, claim: IdempotencyRecord) -> None:
        self._tx(
            lambda c: c.execute(
                "DELETE FROM idempotency WHERE key = ? AND token = ? AND status = 0",
                (key, claim.token),
            ),
            write=True,
        )
