"""Dataset statistics, the text tables, and the ``micrec data stats|split`` commands."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from model.commands.runner import main
from model.data.dataset import Dataset
from model.data.filtering import k_core
from model.data.loading import load_dataset
from model.data.split import SplitConfig, build_split
from model.data.splitio import load_split, slice_sizes
from model.data.stats import dataset_stats, format_slice_table, format_stats_table, format_table


@pytest.fixture
def tiny(make_dataset: Callable[..., Path]) -> Path:
    # a: u1 x {a1,a2,a3}, u2 x {a1}; b: u1 x {b1}, u3 x {b1}; b2 is never bought
    return make_dataset(
        [
            ("u1", "a1", "a"),
            ("u1", "a2", "a"),
            ("u1", "a3", "a"),
            ("u2", "a1", "a"),
            ("u1", "b1", "b"),
            ("u3", "b1", "b"),
        ],
        [
            ("a1", "a", "", ""),
            ("a2", "a", "", ""),
            ("a3", "a", "", ""),
            ("b1", "b", "", ""),
            ("b2", "b", "", ""),
        ],
    )


def test_dataset_stats_values(tiny: Path) -> None:
    rows = {s.domain: s for s in dataset_stats(load_dataset(tiny))}
    assert list(rows) == ["a", "b", "all"]
    a, b, every = rows["a"], rows["b"], rows["all"]
    assert (a.users, a.items, a.interactions, a.overlapping_users) == (2, 3, 4, 1)
    assert a.density == pytest.approx(4 / 6)
    assert a.user_degree == (1.0, 1.5, 2.0, 2.5, 3.0)
    assert a.item_degree == (1.0, 1.0, 1.0, 1.5, 2.0)
    assert (b.users, b.items, b.interactions, b.overlapping_users) == (2, 2, 2, 1)
    assert b.item_degree == (0.0, 0.5, 1.0, 1.5, 2.0)  # b2: catalogue item, degree 0
    assert (every.users, every.items, every.interactions, every.overlapping_users) == (3, 5, 6, 1)
    assert every.user_degree[-1] == 4.0


def test_dataset_stats_on_filtered_rows_counts_surviving_items(tiny: Path) -> None:
    ds = load_dataset(tiny)
    rows = {s.domain: s for s in dataset_stats(ds, k_core(ds.interactions, 2))}
    # the 2-core of a is empty (u2 has one item); b's is empty too
    assert rows["a"].items == 0 and rows["all"].interactions == 0


def test_tables(tiny: Path, synthetic_dataset: Callable[..., Path]) -> None:
    text = format_stats_table(dataset_stats(load_dataset(tiny)))
    lines = text.splitlines()
    assert lines[0].split()[:4] == ["domain", "users", "items", "interactions"]
    assert [ln.split()[0] for ln in lines[2:]] == ["a", "b", "all"]
    assert lines[2].split()[-2:] == ["1/1.5/2/2.5/3", "1/1/1/1.5/2"]
    sizes = slice_sizes(build_split(load_dataset(synthetic_dataset()), SplitConfig()))
    table = format_slice_table(sizes).splitlines()
    assert len(table) == 2 + len(sizes) and table[2].split()[1] == str(sizes["a"]["users"])
    assert format_table(["x", "n"], [["long name", 1]]).splitlines()[2] == "long name  1"


def test_cli_stats(tiny: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "stats", str(tiny)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "ds" and "overlap users" in out


def test_cli_split_saves_prints_and_exports(
    synthetic_dataset: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = synthetic_dataset()
    out, exp = tmp_path / "split", tmp_path / "export"
    argv = ["data", "split", str(root), "--out", str(out), "--seed", "3", "--k-core", "4"]
    argv += ["--new-ratio", "0.25", "--overlap-ratio", "0.5", "--sparsify", "a=0.5"]
    argv += ["--export", str(exp)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    split = load_split(out)
    assert split.config == SplitConfig(
        seed=3, k_core=4, new_ratio=0.25, overlap_ratio=0.5, sparsify={"a": 0.5}
    )
    expected = build_split(load_dataset(root), split.config)
    for d, ds in expected.domains.items():
        assert np.array_equal(split.domains[d].train, ds.train)
    sizes = slice_sizes(split)
    assert json.loads((exp / "slices.json").read_text()) == sizes
    assert format_slice_table(sizes) in printed
    assert (exp / "a" / "inmo_dropui" / "train.txt").is_file()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--sparsify", "zz=0.5"], "unknown domain(s) zz"),
        (["--overlap-ratio", "2"], "overlap_ratio must be in [0, 1]"),
        (["--min-rating", "4"], "needs a rating column"),
        (["--k-core", "1000"], "no interaction left"),
    ],
)
def test_cli_split_user_errors(
    synthetic_dataset: Callable[..., Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    needle: str,
) -> None:
    root = synthetic_dataset()
    assert main(["data", "split", str(root), "--out", str(tmp_path / "o"), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("micrec data: error: ") and needle in err[0]


def test_cli_split_bad_sparsify_syntax(
    synthetic_dataset: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["data", "split", str(synthetic_dataset()), "--out", str(tmp_path), "--sparsify", "a"]
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert "expected DOMAIN=SHARE" in capsys.readouterr().err


ITEMS = "item_id,domain,title,categories\na1,arts,t,c\no1,office,t,c\n"


@pytest.mark.parametrize("verb", ["stats", "split"])
@pytest.mark.parametrize(
    ("inter", "items", "expected"),
    [
        (
            "user_id,domain\nu1,arts\n",
            ITEMS,
            "interactions.csv:1: missing required column(s): item_id",
        ),
        (
            "user_id,item_id,domain\nu1,a1,arts\n",
            ITEMS + "a1,office,t,c\n",
            "items.csv:4: item 'a1' is listed in two domains: 'arts' (line 2) and 'office'",
        ),
        (
            "user_id,item_id,domain\nu1,a1,arts\nu2,o1\n",
            ITEMS,
            "interactions.csv:3: bad line: 2 fields, header has 3",
        ),
    ],
)
def test_cli_malformed_csv_gives_one_line(
    write_raw: Callable[..., Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    verb: str,
    inter: str,
    items: str,
    expected: str,
) -> None:
    root = write_raw(inter, items)
    argv = ["data", verb, str(root)] + (["--out", str(tmp_path / "o")] if verb == "split" else [])
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(f"micrec data: error: {root.resolve()}/")
    assert expected in lines[0]
    assert "Traceback" not in captured.err and captured.out == ""


def test_cli_missing_dataset_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "stats", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"micrec data: error: {tmp_path / 'nope'}: no such dataset folder"]


@pytest.mark.real_data
def test_real_stats(arts_office: Dataset) -> None:
    rows = {s.domain: s for s in dataset_stats(arts_office)}
    assert (rows["arts"].users, rows["arts"].items, rows["arts"].interactions) == (
        9577,
        18639,
        110016,
    )
    assert rows["office"].interactions == 96645 and rows["all"].overlapping_users == 9577
    assert rows["all"].item_degree[2] == 3 and rows["all"].user_degree[2] == 17  # README
