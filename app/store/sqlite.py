"""Embedded durable store on one SQLite file: the default for a single machine.

Durability and atomicity:

* ``journal_mode=WAL`` + ``synchronous=FULL``: every commit fsyncs the write-ahead log before
  the call returns, so an acknowledged write survives a process crash or power loss (WAL with
  ``NORMAL`` would only survive a process crash). WAL also lets readers run while one writer
  commits.
* Every method runs in one transaction. Writes open it with ``BEGIN IMMEDIATE``: that takes
  the write lock up front, so two writers queue on ``busy_timeout`` instead of both reading
  under a shared lock and one failing with SQLITE_BUSY when it tries to upgrade (a deadlock
  the busy handler cannot resolve).

Threads: FastAPI runs sync handlers in a thread pool, and an sqlite3 connection must not be
used by two threads at once. Each thread gets its own connection (``threading.local``), so
reads proceed in parallel under WAL; SQLite itself serialises the writers.

The change feed keeps the *latest* change per item (an item's older entry is replaced by the
new one, under a new, larger seq). A follower that is behind therefore still sees every item
whose state differs from what it applied, in seq order, and the feed stays as large as the
number of distinct item ids ever written (deletions stay as tombstones so followers learn of
them) instead of growing with every write.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TypeVar

from app.store import paging
from app.store.base import (
    IdempotencyRecord,
    Interaction,
    ItemChange,
    Store,
    StoredItem,
    StoreUnavailable,
    WantedBundle,
    pack_vector,
    unpack_vector,
)

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    item_id     TEXT PRIMARY KEY,
    domain      TEXT NOT NULL,
    title       TEXT NOT NULL,
    categories  TEXT NOT NULL,
    description TEXT NOT NULL,
    created_at  REAL NOT NULL,
    updated_at  REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS item_content (
    item_id  TEXT NOT NULL REFERENCES items(item_id) ON DELETE CASCADE,
    modality TEXT NOT NULL,
    dtype    TEXT NOT NULL,
    shape    TEXT NOT NULL,  -- JSON list of ints
    data     BLOB NOT NULL,  -- raw little-endian bytes, never a pickle
    PRIMARY KEY (item_id, modality)
);
CREATE TABLE IF NOT EXISTS item_pictures (
    item_id TEXT PRIMARY KEY REFERENCES items(item_id) ON DELETE CASCADE,
    data    BLOB NOT NULL   -- a WebP thumbnail (app/images.py), served as is
);
-- AUTOINCREMENT: a seq is never reused, even after the row holding the largest one is
-- deleted (the feed compaction below deletes rows), so seqs only ever grow.
CREATE TABLE IF NOT EXISTS item_changes (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    item_id TEXT NOT NULL UNIQUE,
    deleted INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS history (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id   TEXT NOT NULL,
    domain    TEXT NOT NULL,
    item_id   TEXT NOT NULL,
    timestamp REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS history_user ON history (user_id, domain, id);
CREATE TABLE IF NOT EXISTS popularity (
    domain  TEXT NOT NULL,
    item_id TEXT NOT NULL,
    count   INTEGER NOT NULL,
    PRIMARY KEY (domain, item_id)
);
CREATE TABLE IF NOT EXISTS popularity_users (
    domain  TEXT NOT NULL,
    item_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    PRIMARY KEY (domain, item_id, user_id)
) WITHOUT ROWID;
-- Erasure finds a user's pairs without scanning every pair.
CREATE INDEX IF NOT EXISTS popularity_users_user ON popularity_users (user_id);
-- Erased users (app/erasure.py): their bundle history is no longer used; exports skip them.
CREATE TABLE IF NOT EXISTS erased_users (
    user_id   TEXT PRIMARY KEY,
    erased_at REAL NOT NULL
);
-- The bundle version replicas should serve (app/promotion.py): at most one row.
CREATE TABLE IF NOT EXISTS bundle_version (
    id           INTEGER PRIMARY KEY CHECK (id = 1),
    version      TEXT NOT NULL,
    announced_at REAL NOT NULL
);
-- Idempotency-Key answers; status 0 = in flight. Expired rows are purged by claims.
CREATE TABLE IF NOT EXISTS idempotency (
    key         TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    token       TEXT NOT NULL,
    status      INTEGER NOT NULL,
    body        BLOB NOT NULL,
    expires_at  REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS idempotency_expiry ON idempotency (expires_at);
"""


class SQLiteStore(Store):
    """:class:`Store` on a SQLite file (created with its parent directory when missing).

    ``busy_timeout_s`` bounds how long a writer waits for another writer; past it, and on
    I/O errors, methods raise :class:`StoreUnavailable` (the service answers 503).
    """

    def __init__(self, path: str | Path, *, busy_timeout_s: float = 10.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._busy_timeout_ms = int(busy_timeout_s * 1000)
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        self._closed = False
        conn = self._conn()
        with self._errors():
            # journal_mode is persistent in the file; the schema is idempotent.
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreUnavailable(f"{self.path}: cannot enable WAL (journal_mode={mode})")
            conn.executescript(_SCHEMA)

    # --- connections and transactions --------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        if self._closed:
            raise StoreUnavailable(f"{self.path}: store is closed")
        with self._errors():
            # isolation_level=None: no implicit transactions; we issue BEGIN/COMMIT ourselves.
            # check_same_thread=False only so close() may close every thread's connection;
            # each connection is still used by its own thread alone.
            conn = sqlite3.connect(
                self.path,
                timeout=self._busy_timeout_ms / 1000,
                isolation_level=None,
                check_same_thread=False,
            )
            # synchronous and foreign_keys are per connection, not stored in the file.
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute(f"PRAGMA busy_timeout={self._busy_timeout_ms}")
        with self._conns_lock:
            self._conns.append(conn)
        self._local.conn = conn
        return conn

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """Map "cannot reach the data" errors (locked past the timeout, I/O, cannot open) to
        StoreUnavailable; programming errors (sqlite3.ProgrammingError etc.) propagate."""
        try:
            yield
        except sqlite3.OperationalError as err:
            raise StoreUnavailable(f"sqlite {self.path}: {err}") from err

    def _tx(self, fn: Callable[[sqlite3.Connection], T], *, write: bool) -> T:
        """Run ``fn`` in one transaction: all of it commits, or none of it."""
        conn = self._conn()
        with self._errors():
            try:
                conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                out = fn(conn)
                conn.execute("COMMIT")
            except BaseException:
                # Also covers a failed COMMIT (disk full, I/O error): never leave the
                # thread's connection inside a transaction.
                if conn.in_transaction:
                    with suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                raise
        return out

    def ping(self) -> bool:
        try:
            return self._tx(lambda c: c.execute("SELECT 1").fetchone()[0] == 1, write=False)
        except (StoreUnavailable, sqlite3.Error):
            return False

    def close(self) -> None:
        """Close every thread's connection; later calls raise StoreUnavailable. Call it once
        in-flight calls have finished (at shutdown)."""
        self._closed = True
        with self._conns_lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            with suppress(sqlite3.Error):
                conn.close()
        self._local = threading.local()

    # --- items -------------------------------------------------------------------------
    @staticmethod
    def _record_change(conn: sqlite3.Connection, item_id: str, deleted: bool) -> int:
        # Compaction: only the newest change of an item is kept (see module docstring).
        conn.execute("DELETE FROM item_changes WHERE item_id = ?", (item_id,))
        cur = conn.execute(
            "INSERT INTO item_changes (item_id, deleted) VALUES (?, ?)", (item_id, int(deleted))
        )
        seq = cur.lastrowid
        assert seq is not None
        return int(seq)

    def put_item(self, item: StoredItem) -> int:
        # Encode before the transaction: a bad vector fails without touching the file.
        content = [(m, *pack_vector(v)) for m, v in item.content.items()]

        def tx(conn: sqlite3.Connection) -> int:
            seq = self._record_change(conn, item.item_id, deleted=False)
            conn.execute(
                "INSERT INTO items (item_id, domain, title, categories, description,"
                " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (item_id) DO UPDATE SET domain = excluded.domain,"
                " title = excluded.title, categories = excluded.categories,"
                " description = excluded.description, created_at = excluded.created_at,"
                " updated_at = excluded.updated_at",
                (
                    item.item_id,
                    item.domain,
                    item.title,
                    item.categories,
                    item.description,
                    float(item.created_at),
                    float(item.updated_at),
                ),
            )
            # A replace must not keep a modality the new version lacks.
            conn.execute("DELETE FROM item_content WHERE item_id = ?", (item.item_id,))
            conn.executemany(
                "INSERT INTO item_content (item_id, modality, dtype, shape, data)"
                " VALUES (?, ?, ?, ?, ?)",
                [(item.item_id, m, dt, json.dumps(shape), data) for m, dt, shape, data in content],
            )
            conn.execute("DELETE FROM item_pictures WHERE item_id = ?", (item.item_id,))
            if item.picture is not None:
                conn.execute(
                    "INSERT INTO item_pictures (item_id, data) VALUES (?, ?)",
                    (item.item_id, item.picture),
                )
            return seq

        return self._tx(tx, write=True)

    @staticmethod
    def _items(
        conn: sqlite3.Connection, where: str, args: tuple[str | int, ...]
    ) -> list[StoredItem]:
        rows = conn.execute(
            "SELECT item_id, domain, title, categories, description, created_at, updated_at"
            f" FROM items {where} ORDER BY item_id",
            args,
        ).fetchall()
        items = {
            r[0]: StoredItem(
                item_id=r[0],
                domain=r[1],
                title=r[2],
                categories=r[3],
                description=r[4],
                created_at=r[5],
                updated_at=r[6],
            )
            for r in rows
        }
        if items:
            content = conn.execute(
                "SELECT item_id, modality, dtype, shape, data FROM item_content"
                f" WHERE item_id IN (SELECT item_id FROM items {where})",
                args,
            )
            for item_id, modality, dtype, shape, data in content:
                items[item_id].content[modality] = unpack_vector(dtype, json.loads(shape), data)
            pictures = conn.execute(
                "SELECT item_id, data FROM item_pictures"
                f" WHERE item_id IN (SELECT item_id FROM items {where})",
                args,
            )
            for item_id, data in pictures:
                items[item_id].picture = bytes(data)
        return list(items.values())

    def get_item(self, item_id: str) -> StoredItem | None:
        found = self._tx(lambda c: self._items(c, "WHERE item_id = ?", (item_id,)), write=False)
        return found[0] if found else None

    def delete_item(self, item_id: str) -> int | None:
        def tx(conn: sqlite3.Connection) -> int | None:
            if conn.execute("DELETE FROM items WHERE item_id = ?", (item_id,)).rowcount == 0:
                return None
            return self._record_change(conn, item_id, deleted=True)

        return self._tx(tx, write=True)

    def list_items(self) -> list[StoredItem]:
        return self._tx(lambda c: self._items(c, "", ()), write=False)

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
        self, rows: Sequence[Interaction], history_cap: int
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
            for domain, item_id, user_id in pairs:
                cur = conn.execute(
                    "INSERT OR IGNORE INTO popularity_users (domain, item_id, user_id)"
                    " VALUES (?, ?, ?)",
                    (domain, item_id, user_id),
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
        return paging.sqlite_interactions(self, batch)

    def iter_items(self, batch: int = 500) -> Iterator[StoredItem]:
        return paging.sqlite_items(self, batch)

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
            pairs = conn.execute(
                "SELECT domain, item_id FROM popularity_users WHERE user_id = ?", (user_id,)
            ).fetchall()
            conn.execute("DELETE FROM popularity_users WHERE user_id = ?", (user_id,))
            conn.executemany(
                "UPDATE popularity SET count = count - 1 WHERE domain = ? AND item_id = ?", pairs
            )
            conn.executemany(
                "DELETE FROM popularity WHERE domain = ? AND item_id = ? AND count <= 0", pairs
            )
            conn.execute("DELETE FROM history WHERE user_id = ?", (user_id,))
            conn.execute(
                "INSERT OR REPLACE INTO erased_users (user_id, erased_at) VALUES (?, ?)",
                (user_id, float(erased_at)),
            )
            return {(d, i): 1 for d, i in pairs}

        return self._tx(tx, write=True)

    def is_erased(self, user_id: str) -> bool:
        row = self._tx(
            lambda c: c.execute(
                "SELECT 1 FROM erased_users WHERE user_id = ?", (user_id,)
            ).fetchone(),
            write=False,
        )
        return row is not None

    def erased_users(self) -> dict[str, float]:
        rows = self._tx(
            lambda c: c.execute("SELECT user_id, erased_at FROM erased_users").fetchall(),
            write=False,
        )
        return {u: float(t) for u, t in rows}

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
            conn.execute(
                "INSERT OR REPLACE INTO idempotency"
                " (key, fingerprint, token, status, body, expires_at) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    key,
                    answer.fingerprint,
                    answer.token,
                    answer.status,
                    answer.body,
                    time.time() + ttl_s,
                ),
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
