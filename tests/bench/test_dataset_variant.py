"""bench/dataset_variant.py: only the kept text columns survive, everything else (ids,
domains, images, interactions) is copied unchanged, and the variant loads as a dataset
whose item texts are the kept columns alone; unknown columns are refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.dataset_variant import main, write_variant
from model.data.loading import load_dataset


def _dataset(folder: Path) -> Path:
    folder.mkdir()
    (folder / "items.csv").write_text(
        "item_id,domain,title,categories,description\n"
        "a1,arts,red paint,arts|paint,a long description of red paint\n"
        "o1,office,stapler,office|desk,\n"
    )
    (folder / "interactions.csv").write_text("user_id,item_id,domain\nu1,a1,arts\nu1,o1,office\n")
    return folder


def test_keeps_only_the_named_text_columns(tmp_path: Path) -> None:
    src = _dataset(tmp_path / "src")
    stats = write_variant(src, tmp_path / "out", ("title",))
    assert stats["items"] == 2
    assert stats["mean_chars_after"] < stats["mean_chars_before"]
    assert (tmp_path / "out" / "interactions.csv").read_bytes() == (
        src / "interactions.csv"
    ).read_bytes()
    ds = load_dataset(tmp_path / "out")
    texts = {it.item_id: it.text() for it in ds.items.values()}
    assert texts == {"a1": "red paint", "o1": "stapler"}
    assert {it.item_id: it.domain for it in ds.items.values()} == {"a1": "arts", "o1": "office"}


def test_two_columns_compose_as_in_training(tmp_path: Path) -> None:
    src = _dataset(tmp_path / "src")
    write_variant(src, tmp_path / "out", ("title", "categories"))
    ds = load_dataset(tmp_path / "out")
    assert ds.items["a1"].text() == "red paint. arts|paint"


def test_unknown_column_is_refused(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    src = _dataset(tmp_path / "src")
    with pytest.raises(SystemExit) as e:
        main(["--dataset", str(src), "--keep-text", "title,colour", "--out", str(tmp_path / "o")])
    assert e.value.code == 2
    assert "unknown text columns ['colour']" in capsys.readouterr().err
