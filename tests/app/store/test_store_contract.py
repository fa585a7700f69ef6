"""The Store contract (app/store/base.py), run on SQLiteStore and on RedisStore against a
real redis-server. Implementation-specific checks are at the end."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from app.store.base import (
    Canary,
    ErasureRecords,
    IdempotencyRecord,
    Interaction,
    ItemChange,
    Store,
    StoredItem,
    StoreUnavailable,
    UserRead,
    WantedBundle,
)
from app.store.factory import create_store
from app.store.redis import RedisStore
from app.store.sqlite import SQLiteStore
from bench.redis_server import RedisServer
from tests.app.store.conftest import Backend


def item(item_id: str, domain: str = "arts", **kw: object) -> StoredItem:
    return StoredItem(item_id=item_id, domain=domain, **kw)  # type: ignore[arg-type]


def tricky_vector(n: int, seed: int) -> np.ndarray:
    """float32 values a text round trip would damage: -0.0, subnormals, extremes, NaN."""
    v = np.random.default_rng(seed).standard_normal(n).astype(np.float32)
    f32 = np.finfo(np.float32)
    v[:6] = np.array([-0.0, 1e-45, f32.max, f32.tiny, np.inf, np.nan], dtype=np.float32)
    return v


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def rows(user: str, domain: str, items: list[str], t0: float = 0.0) -> list[Interaction]:
    return [Interaction(user, i, domain, t0 + k) for k, i in enumerate(items)]


# --- items --------------------------------------------------------------------------------
def test_ping(store: Store) -> None:
    assert store.ping() is True


def test_item_round_trip_is_bit_exact(store: Store) -> None:
    text, image = tricky_vector(384, 0), tricky_vector(32, 1).reshape(4, 8)
    original = item(
        "mug:red/1 ü",
        title="red mug ☕",
        categories="cups|kitchen",
        description="line one\nline two\x00end",
        content={"text": text, "image": image},
        created_at=1732350000.123456789,
        updated_at=0.1 + 0.2,
    )
    seq = store.put_item(original)
    got = store.get_item("mug:red/1 ü")
    assert got is not None
    assert (got.item_id, got.domain, got.title, got.categories, got.description) == (
        original.item_id,
        original.domain,
        original.title,
        original.categories,
        original.description,
    )
    assert got.created_at == original.created_at and got.updated_at == original.updated_at
    assert store.item_changes(0) == [ItemChange(seq, original.item_id, False)]
    assert set(got.content) == {"text", "image"}
    assert same_bits(got.content["text"], text) and same_bits(got.content["image"], image)
    got.content["text"][0] = 5.0  # returned arrays are the caller's own, writable copies
    assert store.get_item("mug:red/1 ü").content["text"][0] == 0.0  # type: ignore[union-attr]


def test_other_numeric_dtypes_round_trip_and_objects_are_refused(store: Store) -> None:
    vectors = {"f64": np.arange(3, dtype=np.float64) / 3, "big": np.arange(4, dtype=">f4")}
    store.put_item(item("a", content=vectors))
    got = store.get_item("a")
    assert got is not None
    assert same_bits(got.content["f64"], vectors["f64"])
    np.testing.assert_array_equal(got.content["big"], vectors["big"])
    with pytest.raises(ValueError, match="numeric"):
        store.put_item(item("b", content={"x": np.array([object()])}))
    assert store.get_item("b") is None


def test_get_unknown_item(store: Store) -> None:
    assert store.get_item("nope") is None


def test_replace_drops_old_fields_and_modalities(store: Store) -> None:
    s1 = store.put_item(item("a", title="v1", content={"text": np.ones(4, np.float32)}))
    s2 = store.put_item(item("a", domain="office", title="v2", content={"image": np.zeros(2)}))
    assert s2 > s1
    got = store.get_item("a")
    assert got is not None
    assert (got.domain, got.title, set(got.content)) == ("office", "v2", {"image"})
    assert [i.item_id for i in store.list_items()] == ["a"]


def test_a_picture_is_stored_with_its_item_and_replaced_with_it(store: Store) -> None:
    picture = bytes(range(256)) * 4  # any bytes, NULs included, round trip exactly
    store.put_item(item("a", picture=picture))
    store.put_item(item("b"))
    got = store.get_item("a")
    assert got is not None and got.picture == picture
    assert {i.item_id: i.picture for i in store.list_items()} == {"a": picture, "b": None}
    store.put_item(item("a", title="v2"))  # a replace without a picture drops it
    replaced = store.get_item("a")
    assert replaced is not None and replaced.picture is None
    store.put_item(item("a", picture=b"v3"))
    store.delete_item("a")
    store.put_item(item("a"))  # re-created after a delete: nothing left of the old one
    again = store.get_item("a")
    assert again is not None and again.picture is None


def test_delete(store: Store) -> None:
    store.put_item(item("a"))
    s_put = store.put_item(item("b"))
    s_del = store.delete_item("a")
    assert s_del is not None and s_del > s_put
    assert store.get_item("a") is None
    assert store.delete_item("a") is None
    assert store.delete_item("never") is None
    assert [i.item_id for i in store.list_items()] == ["b"]


def test_list_items(store: Store) -> None:
    assert store.list_items() == []
    for k in range(5):
        store.put_item(item(f"i{k}", content={"text": np.full(3, k, np.float32)}))
    listed = {i.item_id: i for i in store.list_items()}
    assert sorted(listed) == [f"i{k}" for k in range(5)]
    assert all(listed[f"i{k}"].content["text"][0] == k for k in range(5))


def test_item_changes_order_after_seq_and_limit(store: Store) -> None:
    assert store.item_changes(0) == []
    sa = store.put_item(item("a"))
    sb = store.put_item(item("b"))
    sc = store.put_item(item("c"))
    assert sa < sb < sc
    sa2 = store.put_item(item("a", title="new"))  # supersedes a's first entry
    sb2 = store.delete_item("b")
    assert sb2 is not None
    feed = store.item_changes(0)
    # Only an item's newest change is kept, in seq order: a follower that applies these
    # reaches the current state whatever it applied before.
    assert feed == [
        ItemChange(sc, "c", False),
        ItemChange(sa2, "a", False),
        ItemChange(sb2, "b", True),
    ]
    assert store.item_changes(sc) == feed[1:]
    assert store.item_changes(sb2) == []
    assert store.item_changes(0, limit=2) == feed[:2]
    # Seqs keep growing after deletes and re-adds; a re-added item is an upsert again.
    sb3 = store.put_item(item("b"))
    assert sb3 > sb2 and store.item_changes(sb2) == [ItemChange(sb3, "b", False)]


def test_follower_converges_through_the_feed(store: Store) -> None:
    """A replica that applies pages of the feed ends with exactly the stored items."""
    applied: dict[str, bool] = {}
    seen = 0

    def follow() -> None:
        nonlocal seen
        while page := store.item_changes(seen, limit=3):
            for ch in page:
                applied[ch.item_id] = not ch.deleted
            seen = page[-1].seq

    for k in range(10):
        store.put_item(item(f"i{k}"))
    follow()
    for k in range(0, 10, 3):
        store.delete_item(f"i{k}")
    store.put_item(item("i3"))
    store.put_item(item("i5", title="changed"))
    follow()
    assert {i for i, live in applied.items() if live} == {i.item_id for i in store.list_items()}


# --- interactions -------------------------------------------------------------------------
def test_history_of_unknown_user_is_empty(store: Store) -> None:
    assert store.get_history("nobody") == {}
    assert store.popularity("arts") == {}


def test_history_is_capped_per_user_and_domain_newest_kept(store: Store) -> None:
    store.add_interactions(
        rows("u", "arts", ["a1", "a2", "a3", "a4", "a5"]) + rows("u", "office", ["o1"]), 3
    )
    assert store.get_history("u") == {"arts": ["a3", "a4", "a5"], "office": ["o1"]}
    store.add_interactions(rows("u", "office", ["o2", "o3", "o4"]) + rows("v", "arts", ["a1"]), 3)
    assert store.get_history("u") == {"arts": ["a3", "a4", "a5"], "office": ["o2", "o3", "o4"]}
    assert store.get_history("v") == {"arts": ["a1"]}
    store.add_interactions(rows("u", "arts", ["a6"]), 3)
    assert store.get_history("u")["arts"] == ["a4", "a5", "a6"]


def test_repeated_items_are_kept_and_counted_once_per_user(store: Store) -> None:
    new = store.add_interactions(rows("u", "arts", ["x", "y", "x"]), 10)
    assert new == {("arts", "x"): 1, ("arts", "y"): 1}
    new = store.add_interactions(rows("w", "arts", ["x"]) + rows("w", "office", ["x"]), 10)
    assert new == {("arts", "x"): 1, ("office", "x"): 1}
    assert store.get_history("u") == {"arts": ["x", "y", "x"]}
    assert store.popularity("arts") == {"x": 2, "y": 1}
    assert store.popularity("office") == {"x": 1}
    assert store.popularity("nowhere") == {}


def test_re_posted_rows_do_not_inflate_popularity(store: Store) -> None:
    for _ in range(5):
        store.add_interactions(rows("booster", "arts", ["x"] * 20), 10)
    assert store.add_interactions(rows("booster", "arts", ["x"]), 10) == {}
    assert store.popularity("arts") == {"x": 1}
    assert store.get_history("booster") == {"arts": ["x"] * 10}  # history keeps the events


def test_popularity_counts_rows_trimmed_from_history(store: Store) -> None:
    store.add_interactions(rows("u", "arts", ["a", "b", "c"]), 1)
    assert store.get_history("u") == {"arts": ["c"]}
    assert store.popularity("arts") == {"a": 1, "b": 1, "c": 1}


def test_ids_with_separators_are_not_confused(store: Store) -> None:
    store.add_interactions(rows("a:b", "c", ["1"]) + rows("a", "b:c", ["2"]), 5)
    store.add_interactions(rows("a%3Ab", "c", ["3"]), 5)
    assert store.get_history("a:b") == {"c": ["1"]}
    assert store.get_history("a") == {"b:c": ["2"]}
    assert store.get_history("a%3Ab") == {"c": ["3"]}


def test_empty_batch_and_bad_cap(store: Store) -> None:
    store.add_interactions([], 5)
    assert store.get_history("u") == {}
    with pytest.raises(ValueError):
        store.add_interactions(rows("u", "arts", ["a"]), 0)
    assert store.get_history("u") == {}


def test_read_user_gives_erasure_and_history_of_the_asked_domains(store: Store) -> None:
    """What a recommend reads (blocking and on the event loop): the same answer."""
    store.add_interactions(rows("u", "arts", ["a1", "a2"]) + rows("u", "toys", ["t1"]), 5)

    def both(user: str, domains: list[str]) -> UserRead:
        sync = store.read_user(user, domains)
        assert asyncio.run(store.read_user_async(user, domains)) == sync
        return sync

    assert both("u", ["arts", "office"]) == UserRead(False, {"arts": ["a1", "a2"]})
    assert both("u", ["arts", "toys"]).history == {"arts": ["a1", "a2"], "toys": ["t1"]}
    assert both("nobody", ["arts"]) == UserRead(False, {})
    store.erase_user("u", 1.0)
    store.add_interactions(rows("u", "arts", ["a3"]), 5)  # after the erasure: kept
    assert both("u", ["arts"]) == UserRead(True, {"arts": ["a3"]})


# --- user erasure -----------------------------------------------------------------------
def test_erase_user_removes_history_and_their_popularity(store: Store) -> None:
    # history cap 1: "a" and "b" leave u's history but stay in the counts until erasure
    store.add_interactions(rows("u", "arts", ["a", "b", "c"]) + rows("u", "office", ["o"]), 1)
    store.add_interactions(rows("v", "arts", ["a", "x"]) + rows("u:v", "arts", ["c"]), 5)
    assert store.popularity("arts") == {"a": 2, "b": 1, "c": 2, "x": 1}
    assert not store.is_erased("u")

    decrements = store.erase_user("u", 1000.0)

    assert decrements == {("arts", "a"): 1, ("arts", "b"): 1, ("arts", "c"): 1, ("office", "o"): 1}
    assert store.get_history("u") == {}
    assert store.popularity("arts") == {"a": 1, "c": 1, "x": 1}  # b dropped at 0
    assert store.popularity("office") == {}
    # other users, including one whose id extends "u", are untouched
    assert store.get_history("v") == {"arts": ["a", "x"]}
    assert store.get_history("u:v") == {"arts": ["c"]}
    assert store.is_erased("u") and not store.is_erased("v") and not store.is_erased("u:v")
    assert store.erased_users() == ErasureRecords.of_ids({"u": 1000.0})


def test_erase_user_is_idempotent_and_records_unknown_users(store: Store) -> None:
    store.add_interactions(rows("u", "arts", ["a"]), 5)
    assert store.erase_user("u", 10.0) == {("arts", "a"): 1}
    assert store.erase_user("u", 20.0) == {}  # nothing left to remove; time updated
    assert store.erase_user("ghost", 30.0) == {}
    assert store.popularity("arts") == {}
    assert store.erased_users() == ErasureRecords.of_ids({"u": 20.0, "ghost": 30.0})


def test_interactions_after_erasure_are_new_data(store: Store) -> None:
    store.add_interactions(rows("u", "arts", ["a"]), 5)
    store.erase_user("u", 10.0)
    assert store.add_interactions(rows("u", "arts", ["a", "b"]), 5) == {
        ("arts", "a"): 1,
        ("arts", "b"): 1,
    }
    assert store.get_history("u") == {"arts": ["a", "b"]}
    assert store.popularity("arts") == {"a": 1, "b": 1}
    assert store.is_erased("u")  # the bundle history stays retired
    assert store.erase_user("u", 20.0) == {("arts", "a"): 1, ("arts", "b"): 1}
    assert store.popularity("arts") == {}


def test_erasure_racing_writes_of_new_domains_leaves_no_count_behind(backend: Backend) -> None:
    """Writes that add domains to the user while erasures run (on Redis the erasure reads
    the user's domains first and retries if they change); whatever the interleaving, a
    final erasure leaves no history and no count of the user."""
    writer, eraser = backend.open(), backend.open()
    errors: list[BaseException] = []

    def write() -> None:
        try:
            for b in range(40):
                writer.add_interactions(rows("u", f"d{b % 8}", [f"i{b}", "hot"]), 5)
                writer.add_interactions(rows("other", f"d{b % 8}", ["hot"]), 5)
        except BaseException as err:  # surfaced below, not lost in the thread
            errors.append(err)

    thread = threading.Thread(target=write)
    thread.start()
    while thread.is_alive():
        eraser.erase_user("u", time.time())
        time.sleep(0.002)  # a tight loop would starve SQLite's busy-waiting writer
    thread.join()
    assert errors == []
    eraser.erase_user("u", time.time())
    assert eraser.get_history("u") == {}
    for d in range(8):
        assert eraser.popularity(f"d{d}") == {"hot": 1}  # only "other" is left


def test_erasure_survives_a_restart(crashable_backend: Backend) -> None:
    s = crashable_backend.open()
    s.add_interactions(rows("u", "arts", ["a"]) + rows("v", "arts", ["a"]), 5)
    s.erase_user("u", 42.5)
    s.close()
    crashable_backend.crash()
    reopened = crashable_backend.open()
    assert reopened.is_erased("u")
    assert reopened.erased_users() == ErasureRecords.of_ids({"u": 42.5})
    assert reopened.get_history("u") == {}
    assert reopened.popularity("arts") == {"a": 1}


def test_readers_never_see_half_a_batch(store: Store) -> None:
    """Each batch appends one row to each of two domains; an atomic batch means a reader
    always sees both histories with the same length."""
    n = 150
    done = threading.Event()
    bad: list[dict[str, list[str]]] = []

    def read() -> None:
        while not done.is_set():
            h = store.get_history("u")
            if len(h.get("arts", [])) != len(h.get("office", [])):
                bad.append(h)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for k in range(n):
            store.add_interactions(
                [Interaction("u", f"a{k}", "arts", k), Interaction("u", f"o{k}", "office", k)],
                1000,
            )
    finally:
        done.set()
        reader.join()
    assert bad == []
    assert len(store.get_history("u")["arts"]) == n


def test_concurrent_writers_lose_nothing(backend: Backend) -> None:
    n_threads, n_batches = 4, 25
    stores = [backend.open() for _ in range(2)]  # threads also share store objects
    errors: list[BaseException] = []
    seqs: list[int] = []
    lock = threading.Lock()

    def write(t: int) -> None:
        s = stores[t % 2]
        try:
            for b in range(n_batches):
                s.add_interactions(
                    [
                        Interaction(f"user{t}", f"t{t}-{b}", "arts", b),
                        Interaction(f"user{t}", "hot", "arts", b),
                        Interaction("shared", f"t{t}-{b}", "office", b),
                    ],
                    history_cap=10_000,
                )
                seq = s.put_item(item(f"item-{t}-{b}", content={"text": np.full(4, b, "f4")}))
                with lock:
                    seqs.append(seq)
        except BaseException as err:  # surfaced below, not lost in the thread
            errors.append(err)

    threads = [threading.Thread(target=write, args=(t,)) for t in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    check = backend.open()
    total = n_threads * n_batches
    assert check.popularity("arts")["hot"] == n_threads  # one (user, item) pair each
    assert sum(check.popularity("office").values()) == total
    assert len(check.get_history("shared")["office"]) == total
    for t in range(n_threads):
        # Each thread's own rows keep its order (oldest first).
        hist = check.get_history(f"user{t}")["arts"]
        assert hist == [x for b in range(n_batches) for x in (f"t{t}-{b}", "hot")]
    assert len(check.list_items()) == total
    assert len(set(seqs)) == total
    assert [c.seq for c in check.item_changes(0, limit=10 * total)] == sorted(seqs)


# --- bundle version (app/lifecycle/promotion.py) ---------------------------------------------------
def test_bundle_version_is_none_until_announced_then_replaced(backend: Backend) -> None:
    store, other = backend.open(), backend.open()  # a replica reads what another wrote
    assert store.get_bundle_version() is None
    store.set_bundle_version("v0002", 1000.25)
    assert other.get_bundle_version() == WantedBundle("v0002", 1000.25)
    store.set_bundle_version("v0001", 1001.5)
    store.set_bundle_version("v0001", 1002.0)  # the same version announced again
    assert other.get_bundle_version() == WantedBundle("v0001", 1002.0)


def test_bundle_version_survives_a_restart(crashable_backend: Backend) -> None:
    crashable_backend.open().set_bundle_version("v0007", 42.5)
    crashable_backend.crash()
    assert crashable_backend.open().get_bundle_version() == WantedBundle("v0007", 42.5)


# --- canary (app/lifecycle/canary.py) --------------------------------------------------------
def test_canary_is_announced_replaced_decided_once_and_cleared(backend: Backend) -> None:
    store, other = backend.open(), backend.open()
    assert store.get_canary() is None
    assert not store.decide_canary("s1", "promote")  # nothing to decide
    store.set_canary(Canary("v0002", 0.1, "s1", 1000.5))
    assert other.get_canary() == Canary("v0002", 0.1, "s1", 1000.5, None)
    assert not other.decide_canary("s0", "promote")  # another canary's salt
    assert other.decide_canary("s1", "rollback")
    assert not store.decide_canary("s1", "promote")  # exactly one decision
    assert store.get_canary() == Canary("v0002", 0.1, "s1", 1000.5, "rollback")
    store.set_canary(Canary("v0003", 0.25, "s2", 1001.0))  # replaced whole: undecided
    assert other.get_canary() == Canary("v0003", 0.25, "s2", 1001.0, None)
    store.set_canary(None)
    assert other.get_canary() is None


# --- idempotency keys ---------------------------------------------------------------------
def answer_of(claim: IdempotencyRecord, status: int, body: bytes) -> IdempotencyRecord:
    return IdempotencyRecord(claim.fingerprint, claim.token, status, body)


def test_idempotency_claim_complete_replay(store: Store) -> None:
    first = IdempotencyRecord("fp-1", "token-a")
    assert store.claim_idempotency_key("k:1", first, 60) is None
    # A second claim (a retry, or a concurrent duplicate) finds the first in flight.
    found = store.claim_idempotency_key("k:1", IdempotencyRecord("fp-1", "token-b"), 60)
    assert found == first and found.in_flight
    body = b'{"accepted": 2}\n\x00\xff binary-safe'
    assert store.complete_idempotency_key("k:1", first, answer_of(first, 207, body), 60)
    found = store.claim_idempotency_key("k:1", IdempotencyRecord("fp-2", "token-c"), 60)
    assert found == IdempotencyRecord("fp-1", "token-a", 207, body) and not found.in_flight
    # Keys are independent (ids with separators cannot collide).
    assert store.claim_idempotency_key("k", IdempotencyRecord("fp-3", "t"), 60) is None
    assert store.claim_idempotency_key("k:1:", IdempotencyRecord("fp-3", "t"), 60) is None


def test_idempotency_only_the_owner_completes_or_releases(store: Store) -> None:
    mine, other = IdempotencyRecord("fp", "mine"), IdempotencyRecord("fp", "other")
    assert store.claim_idempotency_key("k", mine, 60) is None
    assert not store.complete_idempotency_key("k", other, answer_of(other, 200, b"x"), 60)
    store.release_idempotency_key("k", other)
    assert store.claim_idempotency_key("k", other, 60) == mine  # untouched
    store.release_idempotency_key("k", mine)
    assert store.claim_idempotency_key("k", other, 60) is None  # released: free again
    assert store.complete_idempotency_key("k", other, answer_of(other, 201, b"done"), 60)
    store.release_idempotency_key("k", other)  # a completed answer is never released
    assert store.claim_idempotency_key("k", mine, 60) == answer_of(other, 201, b"done")


def test_idempotency_records_expire(store: Store) -> None:
    claim = IdempotencyRecord("fp", "t1")
    assert store.claim_idempotency_key("lease", claim, 0.2) is None
    assert store.claim_idempotency_key("answer", claim, 60) is None
    assert store.complete_idempotency_key("answer", claim, answer_of(claim, 200, b"a"), 0.2)
    time.sleep(0.4)
    later = IdempotencyRecord("fp", "t2")
    assert store.claim_idempotency_key("lease", later, 60) is None  # a dead claim frees
    assert store.claim_idempotency_key("answer", later, 60) is None  # answers expire too
    # The expired claim's owner can no longer overwrite the key another claim holds.
    assert not store.complete_idempotency_key("lease", claim, answer_of(claim, 200, b"a"), 60)


def test_idempotency_concurrent_claims_one_wins(backend: Backend) -> None:
    stores = [backend.open() for _ in range(6)]
    results: list[IdempotencyRecord | None] = [None] * len(stores)
    barrier = threading.Barrier(len(stores))

    def claim(k: int) -> None:
        barrier.wait()
        record = IdempotencyRecord("fp", f"t{k}")
        results[k] = stores[k].claim_idempotency_key("race", record, 60) or record

    threads = [threading.Thread(target=claim, args=(k,)) for k in range(len(stores))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Every claimer sees the same winner: the one whose claim went in.
    winners = {r.token for r in results if r is not None}
    assert len(winners) == 1


# --- durability ---------------------------------------------------------------------------
def test_acknowledged_writes_survive_a_restart(crashable_backend: Backend) -> None:
    s = crashable_backend.open()
    v = tricky_vector(64, 2)
    s.put_item(item("keep", content={"text": v}))
    s.put_item(item("gone"))
    seq_del = s.delete_item("gone")
    s.add_interactions(rows("u", "arts", ["a", "b", "c"]), 2)
    s.close()
    crashable_backend.crash()
    reopened = crashable_backend.open()
    got = reopened.get_item("keep")
    assert got is not None and same_bits(got.content["text"], v)
    assert reopened.get_item("gone") is None
    assert reopened.get_history("u") == {"arts": ["b", "c"]}
    assert reopened.popularity("arts") == {"a": 1, "b": 1, "c": 1}
    assert reopened.item_changes(0)[-1] == ItemChange(seq_del, "gone", True)  # type: ignore[arg-type]
    # seqs keep increasing across the restart
    assert reopened.put_item(item("after")) > seq_del  # type: ignore[operator]


def test_idempotency_answers_survive_a_restart(crashable_backend: Backend) -> None:
    s = crashable_backend.open()
    claim = IdempotencyRecord("fp", "t")
    assert s.claim_idempotency_key("k", claim, 60) is None
    assert s.complete_idempotency_key("k", claim, answer_of(claim, 201, b"{}"), 60)
    s.close()
    crashable_backend.crash()
    reopened = crashable_backend.open()
    found = reopened.claim_idempotency_key("k", IdempotencyRecord("fp", "u"), 60)
    assert found == answer_of(claim, 201, b"{}")


# --- SQLite specifics ---------------------------------------------------------------------
_CRASH_WRITER = """
import os, signal, sys
import numpy as np
from app.store.base import Interaction, StoredItem
from app.store.sqlite import SQLiteStore
s = SQLiteStore(sys.argv[1])
for k in range(20):
    s.put_item(StoredItem(f"i{k}", "arts", content={"text": np.full(8, k, np.float32)}))
    s.add_interactions([Interaction("u", f"i{k}", "arts", k)], 5)
print("acknowledged", flush=True)
os.kill(os.getpid(), signal.SIGKILL)  # no close(), no atexit, no cleanup
"""


def test_sqlite_writes_survive_a_killed_process(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    root = Path(__file__).resolve().parents[3]
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_CRASH_WRITER), str(db)],
        capture_output=True,
        text=True,
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        timeout=120,
    )
    assert proc.returncode == -9, proc.stderr
    assert proc.stdout.strip() == "acknowledged"
    s = SQLiteStore(db)
    assert len(s.list_items()) == 20
    assert s.get_history("u") == {"arts": [f"i{k}" for k in range(15, 20)]}
    assert sum(s.popularity("arts").values()) == 20


def test_sqlite_pragmas_and_per_thread_connections(tmp_path: Path) -> None:
    s = SQLiteStore(tmp_path / "state.db")
    conns: list[object] = []

    def probe() -> None:
        c = s._conn()
        conns.append(c)
        assert c.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert c.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL

    probe()
    th = threading.Thread(target=probe)
    th.start()
    th.join()
    assert len(conns) == 2 and conns[0] is not conns[1]
    s.close()
    with pytest.raises(StoreUnavailable):
        s.get_item("a")
    assert s.ping() is False


def test_sqlite_batch_failing_midway_is_rolled_back(tmp_path: Path) -> None:
    s = SQLiteStore(tmp_path / "state.db")
    s.add_interactions(rows("u", "arts", ["a"]), 5)
    # Make the last statement of the transaction (popularity) fail after history rows were
    # inserted and trimmed: nothing of the batch may remain.
    s._conn().execute(
        "CREATE TRIGGER boom BEFORE INSERT ON popularity WHEN NEW.item_id = 'boom'"
        " BEGIN SELECT RAISE(ABORT, 'boom'); END"
    )
    with pytest.raises(Exception, match="boom"):
        s.add_interactions(rows("u", "arts", ["b", "c", "d", "e", "boom"]), 5)
    assert s.get_history("u") == {"arts": ["a"]}
    assert s.popularity("arts") == {"a": 1}
    s.add_interactions(rows("u", "arts", ["b"]), 5)  # the connection is usable again
    assert s.get_history("u") == {"arts": ["a", "b"]}


# --- Redis specifics ----------------------------------------------------------------------
def test_redis_outage_raises_store_unavailable_and_recovers(
    own_redis_server: RedisServer,
) -> None:
    s = RedisStore(own_redis_server.url, prefix="outage:")
    s.put_item(item("a"))
    s.add_interactions(rows("u", "arts", ["a"]), 5)
    own_redis_server.stop(hard=True)
    assert s.ping() is False
    calls: list[Callable[[], object]] = [
        lambda: s.put_item(item("b")),
        lambda: s.get_item("a"),
        lambda: s.delete_item("a"),
        s.list_items,
        lambda: s.item_changes(0),
        lambda: s.add_interactions(rows("u", "arts", ["b"]), 5),
        lambda: s.get_history("u"),
        lambda: s.popularity("arts"),
    ]
    for call in calls:
        with pytest.raises(StoreUnavailable):
            call()
    own_redis_server.start()
    # Same store object, no restart: it reconnects by itself.
    assert s.ping() is True
    assert s.put_item(item("b")) > 1
    assert {i.item_id for i in s.list_items()} == {"a", "b"}
    assert s.get_history("u") == {"arts": ["a"]}


def test_redis_async_user_read_outage_timeout_and_recovery(
    own_redis_server: RedisServer,
) -> None:
    s = RedisStore(own_redis_server.url, prefix="aio:")
    s.add_interactions(rows("u", "arts", ["a"]), 5)

    async def reads() -> None:
        assert (await s.read_user_async("u", ["arts"])).history == {"arts": ["a"]}
        s._r.script_flush()  # the read's Lua script is gone: NOSCRIPT, loaded again
        assert (await s.read_user_async("u", ["arts"])).history == {"arts": ["a"]}
        own_redis_server.stop(hard=True)
        with pytest.raises(StoreUnavailable):
            await s.read_user_async("u", ["arts"])
        own_redis_server.start()
        # the pooled connection died with the server: replaced, no error
        assert (await s.read_user_async("u", ["arts"])).history == {"arts": ["a"]}

    asyncio.run(reads())

    # More concurrent reads than pooled connections wait for one instead of failing.
    small = RedisStore(own_redis_server.url, prefix="aio:", max_connections=2)

    async def many() -> list[UserRead]:
        return await asyncio.gather(*(small.read_user_async("u", ["arts"]) for _ in range(50)))

    assert all(r.history == {"arts": ["a"]} for r in asyncio.run(many()))
    # A server that accepts but never answers: the read gives up after the timeout.
    with socket.socket() as mute:
        mute.bind(("127.0.0.1", 0))
        mute.listen()
        port = mute.getsockname()[1]
        slow = RedisStore(f"redis://127.0.0.1:{port}/0", socket_timeout_s=0.3)
        # wait_for is only a deadline against a hang: the store's own timeout must give up
        with pytest.raises(StoreUnavailable):
            asyncio.run(asyncio.wait_for(slow.read_user_async("u", ["arts"]), 5))


def test_redis_stale_connections_after_a_restart_are_replaced(
    own_redis_server: RedisServer,
) -> None:
    """Pooled sockets the old server closed must not fail the first calls after a restart
    (no call happens while the server is down to notice it)."""
    s = RedisStore(own_redis_server.url, prefix="stale:")
    s.put_item(item("a"))  # pool holds a connection, and the server has the script cached
    own_redis_server.stop(hard=True)
    own_redis_server.start()
    assert s.get_item("a") is not None
    assert s.put_item(item("b")) == 2  # script cache was flushed: reloaded transparently


def test_redis_prefixes_isolate_stores(redis_server: RedisServer) -> None:
    a = RedisStore(redis_server.url, prefix="iso-a:")
    b = RedisStore(redis_server.url, prefix="iso-b:")
    try:
        a.put_item(item("x"))
        a.add_interactions(rows("u", "arts", ["x"]), 5)
        assert b.get_item("x") is None and b.list_items() == [] and b.item_changes(0) == []
        assert b.get_history("u") == {} and b.popularity("arts") == {}
    finally:
        a.close()
        b.close()


def test_redis_erasure_of_pairs_counted_before_the_per_user_set(
    redis_server: RedisServer,
) -> None:
    """Data written before ``popitems`` existed: the pairs still in the history are found."""
    s = RedisStore(redis_server.url, prefix="legacy-erase:")
    try:
        s.add_interactions(rows("u", "arts", ["a", "b"]) + rows("v", "arts", ["a"]), 5)
        s._r.delete(s.keys.pop_items("u"))  # as an older version wrote it
        assert s.erase_user("u", 1.0) == {("arts", "a"): 1, ("arts", "b"): 1}
        assert s.popularity("arts") == {"a": 1}
        assert s.get_history("u") == {}
    finally:
        s.close()


# --- factory ------------------------------------------------------------------------------
def test_factory(tmp_path: Path, redis_server: RedisServer) -> None:
    s = create_store(f"sqlite:///{tmp_path / 'sub' / 'state.db'}")
    assert isinstance(s, SQLiteStore) and s.path == tmp_path / "sub" / "state.db"
    assert s.ping()
    r = create_store(redis_server.url)
    assert isinstance(r, RedisStore) and r.ping()
    r.close()


@pytest.mark.parametrize(
    "url", ["", "state.db", "mysql://h/db", "sqlite://", "sqlite:///", "sqlite:///:memory:"]
)
def test_factory_rejects_unknown_urls(url: str) -> None:
    with pytest.raises(ValueError, match=r"store URL|sqlite"):
        create_store(url)
