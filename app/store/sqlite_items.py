"""The SQLite store's items: a :class:`StoredItem` written to and read from its three tables
(``items``, ``item_content``, ``item_pictures``), and the item change feed.

The change feed keeps the *latest* change per item (an item's older entry is replaced by the
new one, under a new, larger seq). A follower that is behind therefore still sees every item
whose state differs from what it applied, in seq order, and the feed stays as large as the
number of distinct item ids ever written (deletions stay as tombstones so followers learn of
them) instead of growing with every write.
"""

from __future__ import annotations

import json
import sqlite3

from app.store.base import StoredItem, unpack_vector


def record_change(conn: sqlite3.Connection, item_id: str, deleted: bool) -> int:
    """Log a change of ``item_id`` in the feed; returns its seq."""
    # Compaction: only the newest change of an item is kept (see the module docstring).
    conn.execute("DELETE FROM item_changes WHERE item_id = ?", (item_id,))
    cur = conn.execute(
        "INSERT INTO item_changes (item_id, deleted) VALUES (?, ?)", (item_id, int(deleted))
    )
    seq = cur.lastrowid
    assert seq is not None
    return int(seq)


def write_item(
    conn: sqlite3.Connection,
    item: StoredItem,
    content: list[tuple[str, str, tuple[int, ...], bytes]],
) -> int:
    """Insert or replace ``item`` with its ``content`` already packed (modality, then
    :func:`~app.store.base.pack_vector`'s triple); returns the change's seq."""
    seq = record_change(conn, item.item_id, deleted=False)
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
        "INSERT INTO item_content (item_id, modality, dtype, shape, data) VALUES (?, ?, ?, ?, ?)",
        [(item.item_id, m, dt, json.dumps(shape), data) for m, dt, shape, data in content],
    )
    conn.execute("DELETE FROM item_pictures WHERE item_id = ?", (item.item_id,))
    if item.picture is not None:
        conn.execute(
            "INSERT INTO item_pictures (item_id, data) VALUES (?, ?)",
            (item.item_id, item.picture),
        )
    return seq


def read_items(
    conn: sqlite3.Connection, where: str, args: tuple[str | int, ...]
) -> list[StoredItem]:
    """The items selected by ``where`` (an SQL clause on ``items`` with ``args``), by id."""
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
