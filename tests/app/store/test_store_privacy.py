"""What an erasure leaves behind, and who counts in popularity (issue 22, findings 6 and
7), on both stores: the erased id is gone from the store's files once purged (SQLite
database + WAL; Redis AOF after the rewrite), idempotency records of requests that named
the user go with it, the erasure record is a pseudonym, and one source (API key) counts
at most ``source_cap`` users per item."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import redis

from app.runtime.idempotency import KeyedRequest
from app.store.base import (
    ErasureRecords,
    IdempotencyRecord,
    Interaction,
    Store,
    erasure_key,
)
from app.store.redis import RedisStore
from app.store.sqlite import SQLiteStore
from bench.redis_server import RedisServer
from tests.app.store.conftest import Backend

VICTIM = "victim-4f1d9c"
"""An id that appears nowhere else, so finding its bytes means a copy was left."""


def rows(user: str, domain: str, items: list[str]) -> list[Interaction]:
    return [Interaction(user, i, domain, 100.0 + k) for k, i in enumerate(items)]


def files_holding(directory: Path, needle: bytes) -> list[str]:
    return sorted(
        str(p.relative_to(directory))
        for p in directory.rglob("*")
        if p.is_file() and needle in p.read_bytes()
    )


def fill(store: Store) -> None:
    """The victim's rows in two domains among others', and a keyed request that named
    the victim (its client key names the victim too, as clients' keys often do: the
    service hands the store a hash of it, as here)."""
    store.add_interactions(rows(VICTIM, "arts", ["a", "b"]) + rows(VICTIM, "food", ["f"]), 5)
    store.add_interactions(rows("other", "arts", ["a", "c"]), 5)
    claim = IdempotencyRecord("fp", "token", users=(VICTIM, "other"))
    key = KeyedRequest.of(f"retry-{VICTIM}-1", method="POST", path="/", body=b"", api_key="k").key
    assert store.claim_idempotency_key(key, claim, 60) is None
    answer = IdempotencyRecord("fp", "token", 200, b'{"accepted":3}', claim.users)
    assert store.complete_idempotency_key(key, claim, answer, 60)


# --- idempotency records and the erasure record -----------------------------------------
def test_erasure_drops_the_idempotency_records_of_requests_naming_the_user(
    store: Store,
) -> None:
    mine = IdempotencyRecord("fp-1", "t1", users=(VICTIM,))
    both = IdempotencyRecord("fp-2", "t2", users=("other", VICTIM))
    theirs = IdempotencyRecord("fp-3", "t3", users=("other",))
    in_flight = IdempotencyRecord("fp-4", "t4", users=(VICTIM,))
    for key, claim in (("k1", mine), ("k2", both), ("k3", theirs), ("k4", in_flight)):
        assert store.claim_idempotency_key(key, claim, 60) is None
    for key, claim in (("k1", mine), ("k2", both), ("k3", theirs)):
        answer = IdempotencyRecord(claim.fingerprint, claim.token, 200, b"{}", claim.users)
        assert store.complete_idempotency_key(key, claim, answer, 60)

    store.erase_user(VICTIM, 1.0)

    probe = IdempotencyRecord("fp-new", "t-new")
    for key in ("k1", "k2", "k4"):  # gone: a new request may use the key
        assert store.claim_idempotency_key(key, probe, 60) is None, key
    assert store.claim_idempotency_key("k3", probe, 60) == IdempotencyRecord(
        "fp-3", "t3", 200, b"{}"
    )
    # a released claim leaves nothing filed under its users either
    later = IdempotencyRecord("fp-5", "t5", users=("u2",))
    assert store.claim_idempotency_key("k5", later, 60) is None
    store.release_idempotency_key("k5", later)
    store.erase_user("u2", 2.0)
    assert store.claim_idempotency_key("k5", probe, 60) is None


def test_the_erasure_record_is_a_pseudonym(store: Store) -> None:
    store.erase_user(VICTIM, 7.0)
    erased = store.erased_users()
    assert VICTIM in erased and erased.get(VICTIM) == 7.0 and "other" not in erased
    assert erased == ErasureRecords({erasure_key(VICTIM): 7.0})
    assert len(erasure_key(VICTIM)) == 64 and VICTIM not in erasure_key(VICTIM)


# --- the files: SQLite ------------------------------------------------------------------
def test_sqlite_purge_leaves_the_erased_id_in_no_file(tmp_path: Path) -> None:
    """secure_delete zeroes the deleted rows; the checkpoint + truncate drops the WAL's
    older page images. Before the purge the WAL still holds the id (what the test would
    catch), after it neither the database, the WAL nor the shared-memory file does."""
    store = SQLiteStore(tmp_path / "state.db")
    try:
        fill(store)
        assert store.purge_erased() == "idle"  # nothing erased yet
        store.erase_user(VICTIM, 1.0)
        assert files_holding(tmp_path, VICTIM.encode())  # the WAL's old pages
        assert store.purge_erased() == "done"
        assert files_holding(tmp_path, VICTIM.encode()) == []
        assert store.purge_erased() == "idle"
        assert store.get_history("other") == {"arts": ["a", "c"]}  # the rest is intact
        assert store.popularity("arts") == {"a": 1, "c": 1}
    finally:
        store.close()


def test_sqlite_erasures_recorded_by_id_in_an_older_file_are_moved_to_pseudonyms(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    SQLiteStore(path).close()
    with sqlite3.connect(path) as conn:  # as an older version left the file
        conn.execute("CREATE TABLE erased_users (user_id TEXT PRIMARY KEY, erased_at REAL)")
        conn.execute("INSERT INTO erased_users VALUES (?, 5.0)", (VICTIM,))
        conn.execute("DROP TABLE popularity_users")
        conn.execute(
            "CREATE TABLE popularity_users (domain TEXT NOT NULL, item_id TEXT NOT NULL,"
            " user_id TEXT NOT NULL, PRIMARY KEY (domain, item_id, user_id)) WITHOUT ROWID"
        )
        conn.execute("INSERT INTO popularity_users VALUES ('arts', 'a', 'old')")
    store = SQLiteStore(path)
    try:
        assert store.is_erased(VICTIM) and store.erased_users().get(VICTIM) == 5.0
        assert store.erase_user("old", 6.0) == {("arts", "a"): 1}  # a pair with no source
        tables = {r[0] for r in store._tx(lambda c: c.execute(
            "SELECT name FROM sqlite_master").fetchall(), write=False)}  # fmt: skip
        assert "erased_users" not in tables
    finally:
        store.close()


# --- the files: Redis -------------------------------------------------------------------
def _rewrite_done(client: redis.Redis) -> bool:
    info = client.info("persistence")
    return not info["aof_rewrite_in_progress"] and not info["aof_rewrite_scheduled"]


def test_redis_purge_rewrites_the_aof_without_the_erased_id(
    own_redis_server: RedisServer,
) -> None:
    """The AOF holds the commands that wrote the victim's keys (and those that deleted
    them, which name the keys) until a rewrite; the purge starts one, and once it has
    completed no file of the server's data directory holds the id."""
    data = own_redis_server.data_dir
    store = RedisStore(own_redis_server.url, prefix="privacy:")
    try:
        fill(store)
        store.erase_user(VICTIM, 1.0)
        assert "appendonlydir" in " ".join(files_holding(data, VICTIM.encode()))
        assert store.purge_erased(60) == "started"
        assert store.purge_erased(60) == "idle"  # nothing erased since
        deadline = time.monotonic() + 30
        while files_holding(data, VICTIM.encode()) and time.monotonic() < deadline:
            time.sleep(0.05)  # the rewrite runs in a child process, old files go after it
        assert _rewrite_done(store._r)
        assert files_holding(data, VICTIM.encode()) == []
        assert store.is_erased(VICTIM) and store.get_history("other") == {"arts": ["a", "c"]}
    finally:
        store.close()


def test_redis_purges_at_most_once_per_interval_and_then_catches_up(
    own_redis_server: RedisServer,
) -> None:
    store = RedisStore(own_redis_server.url, prefix="interval:")
    try:
        store.erase_user("first", 1.0)
        assert store.purge_erased(0.5) == "started"
        store.erase_user("second", 2.0)
        assert store.purge_erased(0.5) == "waiting"  # within the interval: not now
        deadline = time.monotonic() + 30
        state = "waiting"
        while state == "waiting" and time.monotonic() < deadline:
            time.sleep(0.1)
            state = store.purge_erased(0.5)  # after the interval (and the first rewrite)
        assert state == "started"
        assert store.purge_erased(0.5) == "idle"
    finally:
        store.close()


def test_redis_erasures_recorded_by_id_are_still_honoured_and_migrated(
    redis_server: RedisServer,
) -> None:
    store = RedisStore(redis_server.url, prefix="legacy-erased:")
    try:
        store._r.hset(store.keys.erased, VICTIM, "5.0")  # as an older version wrote it
        assert store.is_erased(VICTIM)
        assert store.read_user(VICTIM, ["arts"]).erased
        assert store.erased_users().get(VICTIM) == 5.0
        assert store.migrate_erasures() == 1
        assert not store._r.exists(store.keys.erased)
        assert store.is_erased(VICTIM) and store.erased_users().get(VICTIM) == 5.0
    finally:
        store.close()


# --- popularity per source ----------------------------------------------------------------
def test_one_source_counts_at_most_source_cap_users_per_item(backend: Backend) -> None:
    store = backend.open()
    fake = [Interaction(f"fake-{k}", "x", "arts", float(k)) for k in range(12)]
    assert store.add_interactions(fake, 5, source="attacker", source_cap=4) == {("arts", "x"): 4}
    assert store.add_interactions(fake, 5, source="attacker", source_cap=4) == {}
    assert store.popularity("arts") == {"x": 4}
    assert store.get_history("fake-11") == {"arts": ["x", "x"]}  # stored, not counted
    # other sources count on their own; a pair another source counted is not counted twice
    assert store.add_interactions(fake[:2] + rows("real", "arts", ["x"]), 5, source="app",
                                  source_cap=4) == {("arts", "x"): 1}  # fmt: skip
    assert store.popularity("arts") == {"x": 5}
    # erasing a counted user frees the place of the source that counted it
    assert store.erase_user("fake-0", 1.0) == {("arts", "x"): 1}
    assert store.add_interactions(fake[5:6], 5, source="attacker", source_cap=4) == {
        ("arts", "x"): 1
    }
    # no cap: every new user counts (one trusted key)
    more = [Interaction(f"bulk-{k}", "y", "arts", 0.0) for k in range(10)]
    assert store.add_interactions(more, 5, source="attacker") == {("arts", "y"): 10}
    assert store.popularity("arts") == {"x": 5, "y": 10}


def test_redis_pairs_counted_by_an_older_version_are_neither_counted_again_nor_kept(
    redis_server: RedisServer,
) -> None:
    """Older versions kept counted pairs in the ``popusers`` set, without a source."""
    store = RedisStore(redis_server.url, prefix="legacy-pairs:")
    try:
        store._r.sadd(store.keys.pop_users("arts"), "x\0old")  # as an older version wrote it
        store._r.hincrby(store.keys.pop("arts"), "x", 1)
        store._r.sadd(store.keys.user("old"), "arts")
        store._r.rpush(store.keys.hist("old", "arts"), "x")
        assert store.add_interactions(rows("old", "arts", ["x"]), 5, source="k", source_cap=4) == {}
        assert store.add_interactions(rows("new", "arts", ["x"]), 5, source="k") == {
            ("arts", "x"): 1
        }
        assert store.erase_user("old", 1.0) == {("arts", "x"): 1}
        assert store.popularity("arts") == {"x": 1}
        assert not store._r.exists(store.keys.pop_users("arts"))
    finally:
        store.close()
