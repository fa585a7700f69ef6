"""The Store's streamed reads for exports (``iter_interactions``, ``iter_items``,
``interaction_count``), on SQLite and on a real redis-server (fixtures in conftest.py)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from app.learning.export import export_dataset
from app.store.base import Interaction, Store, StoredItem
from model.bundle import FORMAT_VERSION
from model.data.loading import load_dataset
from model.pipeline import data_fingerprint
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


def _bundle_with_dataset(tmp_path: Path) -> Path:
    """A bundle directory as far as the export reads one: a manifest naming its dataset."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "items.csv").write_text(
        "item_id,domain,title,categories\n"
        + "".join(f"a{k},arts,title {k},Arts\n" for k in range(5))
    )
    (data / "interactions.csv").write_text(
        "user_id,item_id,domain,timestamp\n"
        + "".join(f"u{k % 3},a{k},arts,{100 + k}\n" for k in range(5))
    )
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    manifest = {
        "format_version": FORMAT_VERSION,
        "created_at": "2026-01-01T00:00:00Z",
        "data": {
            "dataset": str(data),
            "split_config": {},
            "fingerprint": data_fingerprint(data, {}),
            "run_config": {},
        },
    }
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    return bundle


def test_export_reads_either_store(store: Store, tmp_path: Path) -> None:
    bundle = _bundle_with_dataset(tmp_path)
    store.put_item(StoredItem("new:1", "arts", title="fresh", categories="Arts|New"))
    store.add_interactions(
        [
            Interaction("u1", "new:1", "arts", 5000.5),
            Interaction("u9", "a2", "arts", 5001.0),
            Interaction("u0", "a4", "arts", 5002.0),
        ],
        history_cap=10,
    )
    store.erase_user("u0", erased_at=6000.0)  # bundle rows and stored rows go
    out = export_dataset(store, bundle, tmp_path / "export", progress=False, batch=2)
    with open(out.path / "interactions.csv", newline="") as f:
        rows = [tuple(r.values()) for r in csv.DictReader(f)]
    assert sorted(rows) == sorted(
        [
            ("u1", "a1", "arts", "101", "bundle"),
            ("u2", "a2", "arts", "102", "bundle"),
            ("u1", "a4", "arts", "104", "bundle"),
            ("u1", "new:1", "arts", "5000", "store"),
            ("u9", "a2", "arts", "5001", "store"),
        ]
    )
    ds = load_dataset(out.path)
    assert ds.items["new:1"].text() == "fresh. Arts|New"
    assert out.counts["rows_skipped_erased"] == 2
