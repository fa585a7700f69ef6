"""The stores' paged reads for exports (``Store.iter_interactions`` / ``iter_items``; the
contract is in base.py): one page per store round trip, so an export of millions of rows
never holds them. Kept apart from the store classes, which are long enough already.

Each store hands its pager only what a page needs (a read transaction; a client, its key
layout and its error mapping), so nothing here depends on a store class or its internals.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from functools import partial
from typing import Any, Protocol, TypeVar
from urllib.parse import unquote

import redis

from app.store.base import Interaction, StoredItem
from app.store.redis_layout import RedisKeys, as_str, decode_item
from app.store.sqlite_items import read_items

R = TypeVar("R")


class ReadTransaction(Protocol):
    def __call__(self, fn: Callable[[sqlite3.Connection], R]) -> R:
        """``fn(connection)`` in one short read transaction; its result."""
        ...


StoreErrors = Callable[[], AbstractContextManager[None]]
"""A context that turns the client's "cannot reach the data" errors into StoreUnavailable."""


# --- SQLite: keyset pages, each one short read transaction -----------------------------
def sqlite_interactions(read: ReadTransaction, batch: int) -> Iterator[Interaction]:
    def page(conn: sqlite3.Connection, after: int) -> list[Any]:
        return conn.execute(
            "SELECT id, user_id, item_id, domain, timestamp FROM history"
            " WHERE id > ? ORDER BY id LIMIT ?",
            (after, int(batch)),
        ).fetchall()

    last = 0
    while True:
        rows = read(partial(page, after=last))
        for _, u, i, d, ts in rows:
            yield Interaction(u, i, d, float(ts))
        if len(rows) < batch:
            return
        last = rows[-1][0]


def sqlite_items(read: ReadTransaction, batch: int) -> Iterator[StoredItem]:
    def page(conn: sqlite3.Connection, after: str) -> list[StoredItem]:
        return read_items(
            conn,
            "WHERE item_id IN (SELECT item_id FROM items WHERE item_id > ?"
            " ORDER BY item_id LIMIT ?)",
            (after, int(batch)),
        )

    last = ""
    while True:
        items = read(partial(page, after=last))
        yield from items
        if len(items) < batch:
            return
        last = items[-1].item_id


# --- Redis: SCAN / SSCAN cursors; a cursor may return a key twice (rehashing), hence
# ``seen`` (one entry per user and domain, or per item, never per row) -----------------
def redis_interactions(
    client: redis.Redis, keys: RedisKeys, errors: StoreErrors, batch: int
) -> Iterator[Interaction]:
    head = f"{keys.prefix}hist:"
    seen: set[Any] = set()
    cursor: Any = 0
    while True:
        with errors():
            cursor, found = client.scan(cursor, match=f"{head}*", count=batch)
            lists = [k for k in found if k not in seen]
            seen.update(lists)
            pipe = client.pipeline(transaction=False)
            for k in lists:
                domain_q, _, user_id = as_str(k)[len(head) :].partition(":")
                pipe.lrange(k, 0, -1)
                pipe.lrange(keys.hist_ts(user_id, unquote(domain_q)), 0, -1)
            replies = pipe.execute() if lists else []
        for k, items, stamps in zip(lists, replies[::2], replies[1::2], strict=True):
            domain_q, _, user_id = as_str(k)[len(head) :].partition(":")
            domain = unquote(domain_q)
            # aligned from the newest end; rows stored before timestamps were kept: 0
            pad = [0.0] * (len(items) - len(stamps))
            for item, ts in zip(items, pad + [float(t) for t in stamps], strict=False):
                yield Interaction(user_id, as_str(item), domain, ts)
        if int(cursor) == 0:
            return


def redis_items(
    client: redis.Redis, keys: RedisKeys, errors: StoreErrors, batch: int
) -> Iterator[StoredItem]:
    seen: set[Any] = set()
    cursor: Any = 0
    while True:
        with errors():
            cursor, members = client.sscan(keys.items, cursor, count=batch)
            ids = [m for m in members if m not in seen]
            seen.update(ids)
            pipe = client.pipeline(transaction=False)
            for m in ids:
                pipe.hgetall(keys.item(as_str(m)))
            hashes = pipe.execute() if ids else []
        # an item deleted since SSCAN has an empty hash: not listed
        yield from (decode_item(as_str(m), h) for m, h in zip(ids, hashes, strict=True) if h)
        if int(cursor) == 0:
            return
