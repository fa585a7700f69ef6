"""load_dataset: the CSV format, de-duplication, and one-line errors for malformed files."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from model.data.dataset import DatasetError
from model.data.loading import load_dataset

ITEMS = (
    "item_id,domain,title,categories\na1,arts,paint,art\na2,arts,brush,art\no1,office,pen,office\n"
)


def test_loads_rows_types_and_order(make_dataset: Callable[..., Path]) -> None:
    root = make_dataset(
        [("u1", "a1", "arts", 10, 5), ("u1", "o1", "office", 11, 3), ("u2", "a2", "arts", 12, 4.5)],
        [("a1", "arts", "paint", "art"), ("o1", "office", "pen", ""), ("a2", "arts", "", "art")],
        inter_header=("user_id", "item_id", "domain", "timestamp", "rating"),
    )
    ds = load_dataset(root)
    assert ds.root == root.resolve() and ds.name == "ds"
    assert list(ds.items) == ["a1", "o1", "a2"]  # items.csv order
    assert ds.domains == ["arts", "office"]
    assert ds.items["o1"].domain == "office" and ds.items["o1"].categories == ""
    assert ds.items["a1"].image is None and ds.items["a1"].description == ""
    inter = ds.interactions
    assert len(inter) == 3
    assert inter.user.dtype == object and inter.user.tolist() == ["u1", "u1", "u2"]
    assert inter.item.tolist() == ["a1", "o1", "a2"]
    assert inter.domain.tolist() == ["arts", "office", "arts"]
    assert inter.timestamp is not None and inter.timestamp.dtype == np.int64
    assert inter.timestamp.tolist() == [10, 11, 12]
    assert inter.rating is not None and inter.rating.dtype == np.float32
    assert inter.rating.tolist() == [5.0, 3.0, 4.5]


def test_optional_columns_absent_are_none(write_raw: Callable[..., Path]) -> None:
    ds = load_dataset(write_raw("user_id,item_id,domain\nu1,a1,arts\n", ITEMS))
    assert ds.interactions.timestamp is None and ds.interactions.rating is None


def test_quoted_fields_bom_blank_lines_and_extra_columns(write_raw: Callable[..., Path]) -> None:
    items = (
        "\ufeffitem_id,domain,title,categories,description,extra\n"
        'a1,arts,"paint, red ""deluxe""","art,\nsupplies","multi\nline",x\n'
        "\n"
        "o1,office,pen,office,,y\n"
    )
    inter = "user_id,domain,item_id,ignored\nu1,arts,a1,z\n\nu1,office,o1,z\n"
    ds = load_dataset(write_raw(inter, items))
    a1 = ds.items["a1"]
    assert a1.title == 'paint, red "deluxe"'
    assert a1.categories == "art,\nsupplies" and a1.description == "multi\nline"
    assert a1.text() == 'paint, red "deluxe". art,\nsupplies. multi\nline'
    assert ds.interactions.item.tolist() == ["a1", "o1"]


def test_duplicates_keep_first(make_dataset: Callable[..., Path]) -> None:
    root = make_dataset(
        [("u1", "a1", "arts", 1, 2), ("u2", "a1", "arts", 2, 5), ("u1", "a1", "arts", 3, 5)],
        [("a1", "arts", "t", "c")],
        inter_header=("user_id", "item_id", "domain", "timestamp", "rating"),
    )
    inter = load_dataset(root).interactions
    assert list(zip(inter.user, inter.item, strict=True)) == [("u1", "a1"), ("u2", "a1")]
    assert inter.timestamp is not None and inter.timestamp.tolist() == [1, 2]


def test_min_rating_filters_after_dedup(make_dataset: Callable[..., Path]) -> None:
    root = make_dataset(
        [("u1", "a1", "arts", 3), ("u1", "a1", "arts", 5), ("u2", "a1", "arts", 4.1)],
        [("a1", "arts", "t", "c")],
        inter_header=("user_id", "item_id", "domain", "rating"),
    )
    # u1's first rating (3) is the pair's rating; 4.1 >= 4.1 holds despite float32 storage.
    assert load_dataset(root, min_rating=4.1).interactions.user.tolist() == ["u2"]
    assert len(load_dataset(root, min_rating=1).interactions) == 2


def test_min_rating_needs_rating_column(write_raw: Callable[..., Path]) -> None:
    with pytest.raises(DatasetError, match="no rating column"):
        load_dataset(write_raw("user_id,item_id,domain\nu1,a1,arts\n", ITEMS), min_rating=4)


def test_timestamp_accepts_integral_float(write_raw: Callable[..., Path]) -> None:
    inter = "user_id,item_id,domain,timestamp\nu1,a1,arts,1.5e9\n"
    ts = load_dataset(write_raw(inter, ITEMS)).interactions.timestamp
    assert ts is not None and ts.tolist() == [1_500_000_000]


def test_image_paths(write_raw: Callable[..., Path], tmp_path: Path) -> None:
    root = write_raw(
        "user_id,item_id,domain\nu1,a1,arts\n",
        "item_id,domain,title,categories,image\na1,arts,t,c,img/a1.png\na2,arts,t,c,\n",
    )
    (root / "img").mkdir()
    (root / "img" / "a1.png").write_bytes(b"\x89PNG")
    ds = load_dataset(root)
    assert ds.items["a1"].image == (root / "img" / "a1.png").resolve()
    assert ds.items["a2"].image is None


def test_missing_image(write_raw: Callable[..., Path]) -> None:
    root = write_raw(
        "user_id,item_id,domain\nu1,a1,arts\n",
        "item_id,domain,title,categories,image\na1,arts,t,c,img/nope.png\n",
    )
    with pytest.raises(DatasetError, match=r"items.csv:2: image 'img/nope.png' .* does not exist"):
        load_dataset(root)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads any file")
def test_unreadable_image(write_raw: Callable[..., Path]) -> None:
    root = write_raw(
        "user_id,item_id,domain\nu1,a1,arts\n",
        "item_id,domain,title,categories,image\na1,arts,t,c,a1.png\n",
    )
    (root / "a1.png").write_bytes(b"x")
    (root / "a1.png").chmod(0)
    try:
        with pytest.raises(DatasetError, match="not readable"):
            load_dataset(root)
    finally:
        (root / "a1.png").chmod(0o644)


GOOD_INTER = "user_id,item_id,domain\nu1,a1,arts\n"


@pytest.mark.parametrize(
    ("inter", "items", "where", "problem"),
    [
        (
            "user_id,domain\nu1,arts\n",
            ITEMS,
            "interactions.csv:1",
            "missing required column(s): item_id",
        ),
        (
            GOOD_INTER,
            "item_id,title\na1,t\n",
            "items.csv:1",
            "missing required column(s): domain, categories",
        ),
        (GOOD_INTER, "item_id,domain,domain,title,categories\n", "items.csv:1", "duplicate column"),
        (GOOD_INTER, ITEMS + "o1,arts,x,y\n", "items.csv:5", "listed in two domains"),
        (GOOD_INTER, ITEMS + "a2,arts,x,y\n", "items.csv:5", "listed twice (first at line 3)"),
        (GOOD_INTER, ITEMS + ",arts,x,y\n", "items.csv:5", "empty item_id"),
        (GOOD_INTER, ITEMS + "a9, ,x,y\n", "items.csv:5", "empty domain"),
        (GOOD_INTER, ITEMS + "a9,arts,x\n", "items.csv:5", "bad line: 3 fields, header has 4"),
        (GOOD_INTER + ",a1,arts\n", ITEMS, "interactions.csv:3", "empty user_id"),
        (GOOD_INTER + "u1,,arts\n", ITEMS, "interactions.csv:3", "empty item_id"),
        (GOOD_INTER + "u1,a1,\n", ITEMS, "interactions.csv:3", "empty domain"),
        (GOOD_INTER + "u1,zz,arts\n", ITEMS, "interactions.csv:3", "item 'zz' is not in items.csv"),
        (GOOD_INTER + "u1,a1,office\n", ITEMS, "interactions.csv:3", "differs from item 'a1'"),
        (GOOD_INTER + "u1,a1,arts,x\n", ITEMS, "interactions.csv:3", "bad line: 4 fields"),
        (
            "user_id,item_id,domain,timestamp\nu1,a1,arts,yesterday\n",
            ITEMS,
            "interactions.csv:2",
            "timestamp 'yesterday' is not an integer",
        ),
        (
            "user_id,item_id,domain,rating\nu1,a1,arts,\n",
            ITEMS,
            "interactions.csv:2",
            "rating '' is not a number",
        ),
        (
            "user_id,item_id,domain,rating\nu1,a1,arts,nan\n",
            ITEMS,
            "interactions.csv:2",
            "rating 'nan' is not finite",
        ),
        ('user_id,item_id,domain\nu1,"a1,arts\n', ITEMS, "interactions.csv:2", "bad line"),
        ("", ITEMS, "interactions.csv", "empty file"),
    ],
)
def test_malformed_files_raise_one_line(
    write_raw: Callable[..., Path], inter: str, items: str, where: str, problem: str
) -> None:
    root = write_raw(inter, items)
    with pytest.raises(DatasetError) as info:
        load_dataset(root)
    msg = str(info.value)
    assert "\n" not in msg
    assert f"{where}: " in msg or msg.endswith(where), msg
    assert problem in msg, msg


def test_line_number_after_multiline_field(write_raw: Callable[..., Path]) -> None:
    items = 'item_id,domain,title,categories\na1,arts,"two\nlines",c\na1,arts,t,c\n'
    with pytest.raises(DatasetError, match=r"items.csv:4: item 'a1' is listed twice"):
        load_dataset(write_raw(GOOD_INTER, items))


def test_missing_folder_and_files(write_raw: Callable[..., Path], tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no such dataset folder"):
        load_dataset(tmp_path / "nope")
    with pytest.raises(DatasetError, match=r"items.csv: missing file"):
        load_dataset(write_raw(GOOD_INTER, None, name="a"))
    with pytest.raises(DatasetError, match=r"interactions.csv: missing file"):
        load_dataset(write_raw(None, ITEMS, name="b"))


def test_error_carries_file_and_line(write_raw: Callable[..., Path]) -> None:
    with pytest.raises(DatasetError) as info:
        load_dataset(write_raw(GOOD_INTER + "u1,zz,arts\n", ITEMS))
    assert info.value.file.endswith("interactions.csv") and info.value.line == 3


@pytest.mark.real_data
def test_real_arts_office(arts_office: object) -> None:
    from model.data.dataset import Dataset

    assert isinstance(arts_office, Dataset)
    inter = arts_office.interactions
    assert len(inter) == 206_661 and len(arts_office.items) == 34_419
    assert arts_office.domains == ["arts", "office"]
    assert int((inter.domain == "arts").sum()) == 110_016
    assert len(set(inter.user.tolist())) == 9_577


def test_ids_are_read_in_the_services_normal_form(write_raw: Callable[..., Path]) -> None:
    """Issue 22 finding 7: the API normalises ids (NFKC, trimmed); a bundle trained on ids
    in another form would hold ids no request can name, so the loader reads the same form."""
    items = (
        "item_id,domain,title,categories\n\uff41\uff11 ,\uff41rts,paint,art\no1, office ,pen,x\n"
    )
    inter = "user_id,item_id,domain\n u\uff11,a1 ,arts\nu1,\uff4f1,office\n"
    ds = load_dataset(write_raw(inter, items))
    assert list(ds.items) == ["a1", "o1"] and ds.domains == ["arts", "office"]
    assert ds.interactions.user.tolist() == ["u1", "u1"]
    assert ds.interactions.item.tolist() == ["a1", "o1"]
