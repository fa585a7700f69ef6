"""The catalogue columns of the serving cache (model/columns.py): what they return equals
the Python lists and dict they replace, in memory and memory-mapped from files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model.columns import CatalogueColumns, CategoryColumn, IdLookup, StringColumn, is_mapped

STRINGS = ["a", "", "ünïcode ✓", "x" * 300, "b", "\ud800lone", "a b", "日本語"]


@pytest.mark.parametrize("mapped", [False, True])
def test_string_column_reads_back_every_string(tmp_path: Path, mapped: bool) -> None:
    col = StringColumn.from_strings(STRINGS)
    if mapped:
        col.save(tmp_path, "s")
        col = StringColumn.load(tmp_path, "s")
        assert is_mapped(col.data) and is_mapped(col.offsets) and not col.offsets.flags.writeable
    assert len(col) == len(STRINGS)
    assert [col[k] for k in range(len(col))] == STRINGS
    assert list(col) == STRINGS and col[-1] == STRINGS[-1] and col[2:5] == STRINGS[2:5]
    assert col.take(np.array([3, 0])) == [STRINGS[3], STRINGS[0]]
    assert col.index("b") == 4 and "日本語" in col
    with pytest.raises(IndexError):
        col[len(STRINGS)]


def test_category_column_is_dictionary_encoded(tmp_path: Path) -> None:
    cats = ["A|b", "c", "A|b", "", "c", "A|b"]
    col = CategoryColumn.from_strings(cats)
    assert col.names == ["A|b", "c", ""] and col.codes.tolist() == [0, 1, 0, 2, 1, 0]
    col.save(tmp_path, "c")
    back = CategoryColumn.load(tmp_path, "c")
    assert list(back) == cats and back[3] == "" and back[1:3] == cats[1:3]


def test_id_lookup_equals_a_dict(tmp_path: Path) -> None:
    ids = ["b", "a", "c10", "c1", "é", "a", "long-" + "z" * 40]  # "a" twice: last wins
    values = np.arange(len(ids), dtype=np.int64) * 7
    want = {i: int(v) for i, v in zip(ids, values, strict=True)}
    lookup = IdLookup.build(ids, values)
    lookup.save(tmp_path, "ids")
    loaded = IdLookup.load(tmp_path, "ids")
    assert is_mapped(loaded.keys) and is_mapped(loaded.values)
    assert not is_mapped(lookup.keys)
    for table in (lookup, loaded):
        asked = [*ids, "", "c", "c100", "zz", "long-" + "z" * 41, "a\x00", "\x00"]
        for i in asked:
            assert table.get(i) == want.get(i), i
        got = table.get_many(asked).tolist()
        assert got == [want.get(i, -1) for i in asked]
    assert IdLookup.build([], np.empty(0, np.int64)).get("a") is None
    with pytest.raises(ValueError, match="NUL"):
        IdLookup.build(["a\x00b"], np.zeros(1, np.int64))


def test_catalogue_columns_round_trip(tmp_path: Path) -> None:
    catalogue = {
        "x": {
            "user_ids": ["u1", "u2"],
            "item_ids": ["i1", "i2", "ｉ3"],  # fullwidth: not in normal form
            "titles": ["one", "two", "three"],
            "categories": ["a", "a|b", "a"],
            "popularity": [3, 0, 1],
        },
        "y": {
            "user_ids": ["u2"],
            "item_ids": ["j1"],
            "titles": ["jay"],
            "categories": [""],
            "popularity": [9],
        },
    }
    built = CatalogueColumns.from_catalogue(["x", "y"], catalogue)
    built.save(tmp_path, {"x": "domain-0", "y": "domain-1"})
    cols = CatalogueColumns.load(tmp_path, {"x": "domain-0", "y": "domain-1"})
    for d, c in catalogue.items():
        got = cols.domains[d]
        assert list(got.item_ids) == c["item_ids"] and list(got.titles) == c["titles"]
        assert list(got.categories) == c["categories"]
        assert got.popularity.tolist() == c["popularity"]
        assert [got.users.get(u) for u in c["user_ids"]] == list(range(len(c["user_ids"])))
    assert cols.domains["x"].unreachable == (1, "ｉ3") and cols.domains["y"].unreachable == (0, "")
    assert cols.items.get("i2") == 1 and cols.items.get("j1") == (1 << 32) | 0
    assert cols.items.get("u1") is None
