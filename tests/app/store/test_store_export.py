"""The Store's streamed reads for exports (``iter_interactions``, ``iter_items``,
``interaction_count``), on SQLite and on a real redis-server (fixtures in conftest.py)."""

from __future__ import annotations

import numpy as np

from app.store.base import Interaction, Store, StoredItem
from tests.app.store.conftest import Backend


def _rows(n_users: int, per_user: int, t0: float = 1000.0) -> list[Interaction]:
    return [
        Interaction(f"user:{u}", f"item-{(u + k) % 37}", "arts" if k % 2 else "my:office", t0 + k)
        for u in range(n_users)
        for k in range(per_user)
    ]


def test_iter_interactions_pages_through_every_row_with_its_timestamp(store: Store) -> None:
    rows = _rows(23, 6)
    store.add_interactions(rows, history_cap=100)
    got = list(store.iter_interactions(batch=7))  # many pages, a partial last one
    assert sorted(got, key=repr) == sorted(rows, key=repr)


def test_iter_interactions_sees_only_the_capped_history_oldest_first(store: Store) -> None:
    rows = [Interaction("u1", f"i{k}", "arts", 100.0 + k) for k in range(10)]
    store.add_interactions(rows[:6], history_cap=4)
    store.add_interactions(rows[6:], history_cap=4)
    got = [r for r in store.iter_interactions(batch=3)]
    assert got == rows[-4:]  # the newest 4, with their own timestamps, oldest first


def test_iter_interactions_leaves_out_an_erased_user(store: Store) -> None:
    store.add_interactions(_rows(3, 4), history_cap=100)
    store.erase_user("user:1", erased_at=5000.0)
    users = {r.user_id for r in store.iter_interactions(batch=2)}
    assert users == {"user:0", "user:2"}
    assert store.get_history("user:1") == {}


def test_iter_interactions_of_an_empty_store(store: Store) -> None:
    assert list(store.iter_interactions()) == []
    assert store.interaction_count() == 0


def test_interaction_count_only_grows(store: Store) -> None:
    store.add_interactions(_rows(2, 5), history_cap=3)  # 10 rows, trimmed to 3 per pair
    assert store.interaction_count() == 10
    store.erase_user("user:0", erased_at=1.0)
    store.add_interactions(_rows(1, 2), history_cap=3)
    assert store.interaction_count() == 12


def test_iter_items_pages_through_every_item(store: Store) -> None:
    vec = np.arange(4, dtype=np.float32)
    for k in range(11):
        store.put_item(
            StoredItem(
                f"it:{k:02d}", "arts", title=f"t{k}", categories="A|B", content={"text": vec}
            )
        )
    store.delete_item("it:03")
    got = {it.item_id: it for it in store.iter_items(batch=4)}
    assert sorted(got) == [f"it:{k:02d}" for k in range(11) if k != 3]
    assert got["it:05"].title == "t5" and got["it:05"].categories == "A|B"
    assert got["it:05"].content["text"].tolist() == vec.tolist()


def test_iter_interactions_survives_reopening(backend: Backend) -> None:
    rows = _rows(4, 3)
    backend.open().add_interactions(rows, history_cap=100)
    again = backend.open()
    assert sorted(again.iter_interactions(batch=5), key=repr) == sorted(rows, key=repr)
    assert again.interaction_count() == len(rows)
