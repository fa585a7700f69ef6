"""build_split (the anchor's procedure), save/load round trip, and the plain export."""

from __future__ import annotations

import csv
import hashlib
import json
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from model.data.dataset import Dataset, DatasetError
from model.data.filtering import k_core
from model.data.loading import load_dataset
from model.data.split import InductiveSplit, SplitConfig, build_split, split_domain
from model.data.splitio import export_split, load_split, save_split, slice_sizes


@pytest.fixture
def synth(synthetic_dataset: Callable[..., Path]) -> Dataset:
    return load_dataset(synthetic_dataset())


def _pairs(ds_split: Any, part: str) -> set[tuple[str, str]]:
    arr = getattr(ds_split, part)
    return {(ds_split.user_ids[u], ds_split.item_ids[i]) for u, i in arr.tolist()}


def test_split_covers_k_core_and_follows_the_rules(synth: Dataset) -> None:
    split = build_split(synth, SplitConfig(seed=3))
    cored = k_core(synth.interactions, 5)
    assert sorted(split.domains) == ["a", "b"]
    for d, ds in split.domains.items():
        rows = cored.domain == d
        expected = set(zip(cored.user[rows].tolist(), cored.item[rows].tolist(), strict=True))
        assert sorted(ds.user_ids) == sorted({u for u, _ in expected})
        assert sorted(ds.item_ids) == sorted({i for _, i in expected})
        train, val, test = (_pairs(ds, p) for p in ("train", "val", "test"))
        assert not (train & val) and not (train & test) and not (val & test)
        assert train | val | test == expected
        assert ds.n_old_users == int(0.8 * ds.n_users) and ds.n_old_items == int(0.8 * ds.n_items)
        n_per_user = Counter(u for u, _ in expected)
        for part, arr in (("train", ds.train), ("test", ds.test)):
            assert arr.dtype == np.int64 and arr.shape[1] == 2
            got = Counter(arr[:, 0].tolist())
            share = 0.7 if part == "train" else 0.2
            for u, raw in enumerate(ds.user_ids):
                assert got.get(u, 0) == int(share * n_per_user[raw])
        assert np.all(np.diff(ds.train[:, 0]) >= 0)  # users ascending (export relies on it)
        assert np.array_equal(ds.train_old(), ds.old_pairs(ds.train))


def test_split_is_seeded(synth: Dataset) -> None:
    a, b = build_split(synth, SplitConfig(seed=1)), build_split(synth, SplitConfig(seed=1))
    c = build_split(synth, SplitConfig(seed=2))
    for d in a.domains:
        assert a.domains[d].user_ids == b.domains[d].user_ids
        assert np.array_equal(a.domains[d].test, b.domains[d].test)
        assert a.domains[d].user_ids != c.domains[d].user_ids


def test_new_ratio_zero_and_default_config(synth: Dataset) -> None:
    split = build_split(synth, SplitConfig(new_ratio=0.0))
    for ds in split.domains.values():
        assert ds.n_old_users == ds.n_users and not ds.new_item_mask().any()
    assert build_split(synth).config == SplitConfig()


def test_overlap_ratio_and_min_rating(
    make_dataset: Callable[..., Path], synthetic_rows: Callable[..., Any]
) -> None:
    inter, items = synthetic_rows(n_users=80, p_both=0.9, per_user=(8, 14), seed=5)
    ratings = [(u, i, d, 5 if k % 3 else 1) for k, (u, i, d) in enumerate(inter)]
    ds = load_dataset(
        make_dataset(ratings, items, inter_header=("user_id", "item_id", "domain", "rating"))
    )
    full = build_split(ds, SplitConfig(k_core=2))
    none = build_split(ds, SplitConfig(k_core=2, overlap_ratio=0.0))
    assert len(full.overlapping_users()) > 30 and none.overlapping_users() == set()
    rated = build_split(ds, SplitConfig(k_core=2, min_rating=4))
    low = {(u, i) for u, i, _, r in ratings if r < 4}
    for dsplit in rated.domains.values():
        kept = _pairs(dsplit, "train") | _pairs(dsplit, "val") | _pairs(dsplit, "test")
        assert kept and not kept & low


def test_sparsify_thins_one_domain_train_only(synth: Dataset) -> None:
    base = build_split(synth, SplitConfig(seed=0))
    thin = build_split(synth, SplitConfig(seed=0, sparsify={"a": 0.4}))
    a0, a1 = base.domains["a"], thin.domains["a"]
    assert len(a1.train) == round(0.4 * len(a0.train))
    assert _pairs(a1, "train") < _pairs(a0, "train")
    assert np.array_equal(a0.val, a1.val) and np.array_equal(a0.test, a1.test)
    assert np.array_equal(base.domains["b"].train, thin.domains["b"].train)


def test_config_errors(synth: Dataset) -> None:
    with pytest.raises(ValueError, match="unknown domain"):
        build_split(synth, SplitConfig(sparsify={"zz": 0.5}))
    for bad in (
        SplitConfig(new_ratio=1.0),
        SplitConfig(overlap_ratio=-0.1),
        SplitConfig(seed=-1),
        SplitConfig(k_core=-1),
        SplitConfig(sparsify={"a": 2.0}),
    ):
        with pytest.raises(ValueError):
            build_split(synth, bad)
    with pytest.raises(DatasetError, match="no interaction left"):
        build_split(synth, SplitConfig(k_core=1000))


def test_domain_emptied_by_k_core_is_skipped(
    make_dataset: Callable[..., Path], synthetic_rows: Callable[..., Any]
) -> None:
    inter, items = synthetic_rows()
    root = make_dataset([*inter, ("u000", "c1", "c")], [*items, ("c1", "c", "t", "")])
    split = build_split(load_dataset(root))
    assert sorted(split.domains) == ["a", "b"]


def _degree_one_domain(n_users: int = 30, per_user: int = 6) -> tuple[list[str], list[str]]:
    """Users with `per_user` items each, every item bought once: the dropui guard fires
    whenever the last old item's only buyer is a new user."""
    users = [f"u{u:02d}" for u in range(n_users) for _ in range(per_user)]
    items = [f"i{u:02d}{j}" for u in range(n_users) for j in range(per_user)]
    return users, items


def test_guard_keeps_last_old_item_seen_by_an_old_user() -> None:
    users, items = _degree_one_domain()
    owner = dict(zip(items, users, strict=True))
    swaps = 0
    for seed in range(20):
        ds = split_domain("x", users, items, seed=seed)
        local_user = {raw: j for j, raw in enumerate(ds.user_ids)}
        last = ds.n_old_items - 1
        assert local_user[owner[ds.item_ids[last]]] < ds.n_old_users
        # what the permutation alone would have given
        rng = np.random.RandomState(seed)
        rng.permutation(ds.n_users)
        raw_items = sorted(set(items))
        drawn = [raw_items[p] for p in rng.permutation(ds.n_items)]
        diff = [j for j in range(ds.n_items) if drawn[j] != ds.item_ids[j]]
        if diff:
            swaps += 1
            assert len(diff) == 2 and diff[-1] == last
            assert local_user[owner[drawn[last]]] >= ds.n_old_users
            # the partner is the largest lower id with an old buyer
            for j in range(diff[0] + 1, last):
                assert local_user[owner[ds.item_ids[j]]] >= ds.n_old_users
    assert swaps >= 1


@pytest.mark.real_data
# seeds 7 and 19 make the guard swap items on the degree-one data (checked below)
@pytest.mark.parametrize(
    ("case", "k", "seeds"), [("degree_one", 1, (0, 7, 19)), ("synthetic", 5, (0, 1))]
)
def test_matches_anchor_script_byte_for_byte(
    tmp_path: Path,
    anchor_dir: Path,
    make_dataset: Callable[..., Path],
    synthetic_dataset: Callable[..., Path],
    case: str,
    k: int,
    seeds: tuple[int, ...],
) -> None:
    """Run the anchor's own script on small data (guard swaps included) and compare."""
    if case == "degree_one":
        users, items = _degree_one_domain()
        root = make_dataset(
            [(u, i, "x") for u, i in zip(users, items, strict=True)],
            [(i, "x", "", "") for i in sorted(set(items))],
        )
        domains = ["x"]
    else:
        root, domains = synthetic_dataset(), ["a", "b"]
    csv_path, dataset = root / "interactions.csv", load_dataset(root)
    swapped = 0
    for seed in seeds:
        ours = export_split(build_split(dataset, SplitConfig(seed=seed, k_core=k)), tmp_path / "e")
        for d in domains:
            out = tmp_path / f"anchor{seed}"
            args = ["--csv", csv_path, "--domain", d, "--seed", seed, "--out", out, "--k", k]
            subprocess.run(
                [sys.executable, str(anchor_dir / "make_split.py"), *map(str, args)],
                check=True,
                capture_output=True,
            )
            meta = json.loads((out / d / str(seed) / "meta.json").read_text())
            swapped += meta["guard_item_swap"] is not None
            for tag, sub in (("", "inmo"), ("_dropui", "inmo_dropui")):
                for part in ("train", "val", "test"):
                    theirs = (out / d / f"{seed}{tag}" / f"{part}.txt").read_bytes()
                    assert (ours / d / sub / f"{part}.txt").read_bytes() == theirs
            for m in ("user_map.tsv", "item_map.tsv"):
                assert (ours / d / "inmo" / m).read_bytes() == (
                    out / d / str(seed) / m
                ).read_bytes()
    if case == "degree_one":
        assert swapped >= 1  # the guard path was exercised


def test_save_load_round_trip(synth: Dataset, tmp_path: Path) -> None:
    split = build_split(synth, SplitConfig(seed=4, sparsify={"b": 0.5}, min_rating=None))
    out = save_split(split, tmp_path / "s")
    assert sorted(p.name for p in out.iterdir()) == ["a", "b", "split.json"]
    assert sorted(p.name for p in (out / "a").iterdir()) == [
        "ids.json",
        "test.npy",
        "train.npy",
        "val.npy",
    ]
    back = load_split(out)
    assert back.config == split.config
    assert list(back.domains) == list(split.domains)
    for d, ds in split.domains.items():
        bd = back.domains[d]
        assert (bd.user_ids, bd.item_ids) == (ds.user_ids, ds.item_ids)
        assert (bd.n_old_users, bd.n_old_items) == (ds.n_old_users, ds.n_old_items)
        for part in ("train", "val", "test"):
            assert np.array_equal(getattr(bd, part), getattr(ds, part))
            assert getattr(bd, part).dtype == np.int64
    assert slice_sizes(back) == slice_sizes(split)


def test_load_split_errors(synth: Dataset, tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"split\.json: missing file"):
        load_split(tmp_path / "none")
    out = save_split(build_split(synth), tmp_path / "s")
    np.save(out / "a" / "val.npy", np.array([[0, 10**6]], dtype=np.int64))
    meta = json.loads((out / "split.json").read_text())
    meta["domains"]["a"]["n_val"] = 1
    (out / "split.json").write_text(json.dumps(meta))
    with pytest.raises(DatasetError, match="out of range"):
        load_split(out)
    (out / "a" / "val.npy").write_bytes(b"garbage")
    with pytest.raises(DatasetError, match=r"val\.npy: not a readable"):
        load_split(out)
    np.save(out / "a" / "val.npy", np.zeros((1, 2), dtype=np.float32))
    with pytest.raises(DatasetError, match=r"expected int \[n, 2\]"):
        load_split(out)
    (out / "split.json").write_text('{"format": "other"}')
    with pytest.raises(DatasetError, match="not a micrec-split file"):
        load_split(out)


def _read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _slices_from_export(root: Path) -> dict[str, Any]:
    """Slice sizes computed from the exported CSVs only, the way an outside tool would."""
    domains = sorted(p.name for p in root.iterdir() if p.is_dir())
    users = {d: _read_rows(root / d / "users.csv") for d in domains}
    items = {d: _read_rows(root / d / "items.csv") for d in domains}
    parts = {
        (d, p): [(r["user_id"], r["item_id"]) for r in _read_rows(root / d / f"{p}.csv")]
        for d in domains
        for p in ("train", "val", "test")
    }
    n_domains = Counter(r["user_id"] for d in domains for r in users[d])
    out: dict[str, Any] = {}
    for d in domains:
        new_u = {r["user_id"] for r in users[d] if r["is_new"] == "1"}
        new_i = {r["item_id"] for r in items[d] if r["is_new"] == "1"}
        trained_elsewhere = {u for e in domains if e != d for u, _ in parts[(e, "train")]}
        xd = {u for u in new_u if u in trained_elsewhere}
        assert xd == {r["user_id"] for r in users[d] if r["is_cross_domain_cold"] == "1"}
        test = parts[(d, "test")]
        degree = Counter(i for _, i in parts[(d, "train")])

        def sl(pairs: list[tuple[str, str]]) -> dict[str, int]:
            return {"test_users": len({u for u, _ in pairs}), "test_pairs": len(pairs)}

        buckets = {}
        for name, lo, hi in (("0", 0, 0), ("1-5", 1, 5), ("6-20", 6, 20), (">20", 21, 10**9)):
            its = {r["item_id"] for r in items[d] if lo <= degree[r["item_id"]] <= hi}
            buckets[name] = {"items": len(its), **sl([p for p in test if p[1] in its])}
        out[d] = {
            "users": len(users[d]),
            "items": len(items[d]),
            "train": len(parts[(d, "train")]),
            "val": len(parts[(d, "val")]),
            "test": len(test),
            "train_old": sum(u not in new_u and i not in new_i for u, i in parts[(d, "train")]),
            "old_users": len(users[d]) - len(new_u),
            "new_users": len(new_u),
            "old_items": len(items[d]) - len(new_i),
            "new_items": len(new_i),
            "overlapping_users": sum(n_domains[r["user_id"]] > 1 for r in users[d]),
            "cold_item_test_pairs": sum(i in new_i for _, i in test),
            "cross_domain_cold_users": len(xd),
            "degree_buckets": buckets,
            "slices": {
                "all": sl(test),
                "old_users": sl([p for p in test if p[0] not in new_u]),
                "new_users": sl([p for p in test if p[0] in new_u]),
                "old_items": sl([p for p in test if p[1] not in new_i]),
                "new_items": sl([p for p in test if p[1] in new_i]),
                "cross_domain_cold": sl([p for p in test if p[0] in xd]),
            },
        }
    return out


def _check_export(split: InductiveSplit, root: Path) -> dict[str, Any]:
    sizes = slice_sizes(split)
    assert json.loads((root / "slices.json").read_text()) == sizes
    assert _slices_from_export(root) == sizes
    return sizes


@pytest.mark.parametrize("cfg", [SplitConfig(seed=2), SplitConfig(seed=0, sparsify={"a": 0.2})])
def test_export_reproduces_slice_sizes(synth: Dataset, tmp_path: Path, cfg: SplitConfig) -> None:
    split = build_split(synth, cfg)
    root = export_split(split, tmp_path / "x")
    sizes = _check_export(split, root)
    a = sizes["a"]
    assert a["old_users"] + a["new_users"] == a["users"]
    assert sum(b["test_pairs"] for b in a["degree_buckets"].values()) == a["test"]
    assert sum(b["items"] for b in a["degree_buckets"].values()) == a["items"]
    assert a["cold_item_test_pairs"] == a["slices"]["new_items"]["test_pairs"]
    assert a["cross_domain_cold_users"] == len(split.cross_domain_cold_users("a")) > 0
    assert json.loads((root / "config.json").read_text())["seed"] == cfg.seed


def test_export_inmo_format(synth: Dataset, tmp_path: Path) -> None:
    split = build_split(synth)
    root = export_split(split, tmp_path / "x")
    ds = split.domains["b"]
    lines = (root / "b" / "inmo" / "train.txt").read_text().splitlines()
    assert len(lines) == ds.n_users
    for u, line in enumerate(lines):
        fields = [int(x) for x in line.split(" ")]
        assert fields[0] == u
        assert fields[1:] == ds.train[ds.train[:, 0] == u, 1].tolist()  # split order kept
    drop = (root / "b" / "inmo_dropui" / "test.txt").read_text().splitlines()
    assert len(drop) == ds.n_old_users
    assert all(int(i) < ds.n_old_items for line in drop for i in line.split(" ")[1:])
    assert sum(len(line.split(" ")) - 1 for line in drop) == len(ds.old_pairs(ds.test))
    user_map = (root / "b" / "inmo" / "user_map.tsv").read_text().splitlines()
    assert user_map[0] == "raw_user_id\tuser_id" and user_map[1] == f"{ds.user_ids[0]}\t0"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.real_data
def test_real_split_equals_inmo_anchor(
    arts_office: Dataset, anchor_dir: Path, tmp_path: Path
) -> None:
    split = build_split(arts_office, SplitConfig(seed=0, k_core=5))
    root = export_split(split, tmp_path / "export")
    for d in ("office", "arts"):
        meta = json.loads((anchor_dir / "splits" / d / "0" / "meta.json").read_text())
        ds = split.domains[d]
        assert (ds.n_users, ds.n_items) == (meta["n_users"], meta["n_items"])
        assert (ds.n_old_users, ds.n_old_items) == (meta["n_old_users"], meta["n_old_items"])
        assert (len(ds.train), len(ds.val), len(ds.test)) == (
            meta["n_train"],
            meta["n_val"],
            meta["n_test"],
        )
        assert len(ds.train_old()) == meta["dropui_n_train"]
        assert len(meta["sha256"]) == 6
        for key, digest in meta["sha256"].items():
            tag, name = key.split("/")
            sub = "inmo" if tag == "0" else "inmo_dropui"
            assert _sha256(root / d / sub / name) == digest, f"{d} {key}"
    sizes = _check_export(split, root)
    assert sizes["office"]["new_users"] == 1283 and sizes["office"]["new_items"] == 897
