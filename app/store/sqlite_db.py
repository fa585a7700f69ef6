"""The SQLite store's file (the base of :class:`~app.store.sqlite.SQLiteStore`): the schema,
per-thread connections and transactions.

Durability and atomicity:

* ``journal_mode=WAL`` + ``synchronous=FULL``: every commit fsyncs the write-ahead log before
  the call returns, so an acknowledged write survives a process crash or power loss (WAL with
  ``NORMAL`` would only survive a process crash). WAL also lets readers run while one writer
  commits.
* Every method runs in one transaction. Writes open it with ``BEGIN IMMEDIATE``: that takes
  the write lock up front, so two writers queue on ``busy_timeout`` instead of both reading
  under a shared lock and one failing with SQLITE_BUSY when it tries to upgrade (a deadlock
  the busy handler cannot resolve).

Erased data: every connection runs with ``secure_delete=ON``, so deleted rows are
overwritten with zeros in their pages (and freed pages zeroed) instead of lingering in free
space; after an erasure, ``purge_erased`` checkpoints the WAL into the database and
truncates it (``wal_checkpoint(TRUNCATE)``), so the log's older page images, which still
hold the rows, are gone too.

Threads: FastAPI runs sync handlers in a thread pool, and an sqlite3 connection must not be
used by two threads at once. Each thread gets its own connection (``threading.local``), so
reads proceed in parallel under WAL; SQLite itself serialises the writers.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TypeVar

from app.store.base import PurgeState, StoreUnavailable, erasure_key

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
    data    BLOB NOT NULL   -- a WebP thumbnail (app/catalogue/images.py), served as is
);
-- AUTOINCREMENT: a seq is never reused, even after the row holding the largest one is
-- deleted (the feed compaction in app/store/sqlite_items.py deletes rows), so seqs only
-- ever grow.
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
-- The (item, user) pairs counted in popularity, with the source (API-key pseudonym) that
-- posted each (the column is added to older files by _migrate).
CREATE TABLE IF NOT EXISTS popularity_users (
    domain  TEXT NOT NULL,
    item_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    source  TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (domain, item_id, user_id)
) WITHOUT ROWID;
-- Erasure finds a user's pairs without scanning every pair.
CREATE INDEX IF NOT EXISTS popularity_users_user ON popularity_users (user_id);
-- Users counted per (item, source): what popularity_key_cap bounds.
CREATE TABLE IF NOT EXISTS popularity_sources (
    domain  TEXT NOT NULL,
    item_id TEXT NOT NULL,
    source  TEXT NOT NULL,
    count   INTEGER NOT NULL,
    PRIMARY KEY (domain, item_id, source)
) WITHOUT ROWID;
-- Erasures (app/users/erasure.py) by pseudonym (app.store.base.erasure_key), never the id: the
-- user's bundle history is no longer used; exports skip them.
CREATE TABLE IF NOT EXISTS erasures (
    user_key  TEXT PRIMARY KEY,
    erased_at REAL NOT NULL
);
-- The bundle version replicas should serve (app/lifecycle/promotion.py): at most one row.
CREATE TABLE IF NOT EXISTS bundle_version (
    id           INTEGER PRIMARY KEY CHECK (id = 1),
    version      TEXT NOT NULL,
    announced_at REAL NOT NULL
);
-- The canary every replica serves to a share of users (app/lifecycle/canary.py): at most
-- one row; decided = '' until one process claims the decision.
CREATE TABLE IF NOT EXISTS canary (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    version    TEXT NOT NULL,
    share      REAL NOT NULL,
    salt       TEXT NOT NULL,
    started_at REAL NOT NULL,
    decided    TEXT NOT NULL
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
-- The users each keyed request named: erasing one deletes the record (and these rows).
CREATE TABLE IF NOT EXISTS idempotency_users (
    user_id TEXT NOT NULL,
    key     TEXT NOT NULL REFERENCES idempotency(key) ON DELETE CASCADE,
    PRIMARY KEY (user_id, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS idempotency_users_key ON idempotency_users (key);
-- Served recommendations (app/store/sqlite_online.py): seq orders them for the cap on
-- their number; a record's feedback is kept with it; user_id NULL = anonymous.
CREATE TABLE IF NOT EXISTS recommendations (
    seq        INTEGER PRIMARY KEY,
    id         TEXT NOT NULL UNIQUE,
    user_id    TEXT,
    expires_at REAL NOT NULL,
    record     BLOB NOT NULL,
    feedback   BLOB NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS recommendations_expiry ON recommendations (expires_at);
CREATE INDEX IF NOT EXISTS recommendations_user ON recommendations (user_id)
    WHERE user_id IS NOT NULL;
-- Online counters per (version, domain) and per hour of the recommendations (their names:
-- app/store/online.py), and the distinct items shown (coverage).
CREATE TABLE IF NOT EXISTS online_counts (
    version TEXT NOT NULL,
    domain  TEXT NOT NULL,
    name    TEXT NOT NULL,
    value   REAL NOT NULL,
    PRIMARY KEY (version, domain, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS online_hourly (
    version TEXT NOT NULL,
    domain  TEXT NOT NULL,
    hour    INTEGER NOT NULL,
    name    TEXT NOT NULL,
    value   REAL NOT NULL,
    PRIMARY KEY (version, domain, hour, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS online_shown (
    version TEXT NOT NULL,
    domain  TEXT NOT NULL,
    item_id TEXT NOT NULL,
    PRIMARY KEY (version, domain, item_id)
) WITHOUT ROWID;
"""


def _migrate(conn: sqlite3.Connection) -> None:
    """Bring a file written by an older version to the schema above (in a write
    transaction; idempotent): popularity pairs get their source column, and the erasure
    records of the table that held ids in clear move to ``erasures`` by pseudonym."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(popularity_users)")}
    if "source" not in columns:
        conn.execute("ALTER TABLE popularity_users ADD COLUMN source TEXT NOT NULL DEFAULT ''")
    legacy = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'erased_users'"
    ).fetchone()
    if legacy is not None:
        rows = conn.execute("SELECT user_id, erased_at FROM erased_users").fetchall()
        conn.executemany(
            "INSERT INTO erasures (user_key, erased_at) VALUES (?, ?) ON CONFLICT (user_key)"
            " DO UPDATE SET erased_at = max(erased_at, excluded.erased_at)",
            [(erasure_key(u), float(t)) for u, t in rows],
        )
        conn.execute("DROP TABLE erased_users")


class SQLiteDatabase:
    """One SQLite file (created with its parent directory when missing) in WAL mode with the
    store's schema; see :class:`~app.store.sqlite.SQLiteStore` for the arguments."""

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
        self._tx(_migrate, write=True)
        # erasures committed / purged from the files (app.store.sqlite purge_erased)
        self._erasures = 0
        self._purged = 0
        self._purge_lock = threading.Lock()

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
            # deleted rows are zeroed, not left in free space (module docstring)
            conn.execute("PRAGMA secure_delete=ON")
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

    def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn`` in one read transaction."""
        return self._tx(fn, write=False)

    def _erased_now(self) -> None:
        """Count an erasure whose transaction committed: the WAL holds its rows until the
        next purge."""
        with self._purge_lock:
            self._erasures += 1

    def purge_erased(self, min_interval_s: float = 0.0) -> PurgeState:
        """Checkpoint the WAL into the database and truncate it when an erasure committed
        since the last purge ("done"); "waiting" when a reader kept it from finishing
        within ``busy_timeout`` (a later call tries again). A checkpoint is cheap (the
        WAL holds at most ~1000 pages: SQLite's auto-checkpoint), so no interval applies."""
        with self._purge_lock:
            due = self._erasures
        if due == self._purged:
            return "idle"
        conn = self._conn()
        with self._errors():
            busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if busy:
            return "waiting"
        with self._purge_lock:
            self._purged = max(self._purged, due)
        return "done"

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
