"""Saving, loading and exporting an :class:`InductiveSplit`, and its slice sizes.

Two on-disk forms, neither uses pickle:

``save_split`` / ``load_split`` (exact round trip, for our own commands)::

    DIR/split.json             {"format": "micrec-split", "version": 1, "config": {...},
                                "domains": {d: {"n_users", "n_items", "n_old_users",
                                                "n_old_items", "n_train", "n_val", "n_test"}}}
    DIR/<d>/ids.json           {"user_ids": [raw ids by local id], "item_ids": [...]}
    DIR/<d>/{train,val,test}.npy   int64 [n, 2] (local user, local item), row order kept

``export_split`` (plain files any outside tool can evaluate on)::

    DIR/config.json            the SplitConfig
    DIR/slices.json            slice_sizes(split)
    DIR/<d>/{train,val,test}.csv   user_id,item_id (raw ids)
    DIR/<d>/users.csv          user_id,is_new,is_cross_domain_cold (0/1; row = local id)
    DIR/<d>/items.csv          item_id,is_new (0/1; row = local id)
    DIR/<d>/inmo/{train,val,test}.txt, user_map.tsv, item_map.tsv
    DIR/<d>/inmo_dropui/{train,val,test}.txt

The ``inmo`` files are the anchor's format (``"<user> <item> <item> ..."``, one line per
local user id, items in split order); ``inmo_dropui`` keeps old users and, for them,
old items only (the inductive training data). With the anchor's seed and k-core they are
byte-identical to ``../shared/anchors/inmo-official/splits/<d>/<seed>{,_dropui}``.
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from model.data.dataset import DatasetError
from model.data.split import DomainSplit, InductiveSplit, SplitConfig

FORMAT = "micrec-split"
VERSION = 1
PARTS = ("train", "val", "test")
DEGREE_BUCKETS: tuple[tuple[str, int, float], ...] = (
    ("0", 0, 0),
    ("1-5", 1, 5),
    ("6-20", 6, 20),
    (">20", 21, float("inf")),
)
"""(name, lowest, highest) full-train item degree of each bucket, bounds inclusive."""


def _domain_dir(root: Path, domain: str) -> Path:
    """``root / domain``, refusing names that would escape ``root`` or hide a folder."""
    if not domain or domain in (".", "..") or "/" in domain or "\\" in domain or "\0" in domain:
        raise ValueError(f"domain name {domain!r} cannot be used as a folder name")
    return root / domain


def config_to_dict(config: SplitConfig) -> dict[str, Any]:
    """JSON-ready dict of a SplitConfig."""
    return asdict(config)


def config_from_dict(data: dict[str, Any]) -> SplitConfig:
    """Inverse of :func:`config_to_dict`; unknown keys raise ValueError."""
    known = set(SplitConfig.__dataclass_fields__)
    extra = sorted(set(data) - known)
    if extra:
        raise ValueError(f"unknown split config key(s): {', '.join(extra)}")
    cfg = SplitConfig(**data)
    cfg.sparsify = {str(k): float(v) for k, v in cfg.sparsify.items()}
    cfg.validate()
    return cfg


def save_split(split: InductiveSplit, out_dir: str | Path) -> Path:
    """Write ``split`` under ``out_dir`` (created if needed); returns the folder."""
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    meta: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "config": config_to_dict(split.config),
        "domains": {},
    }
    for d, ds in split.domains.items():
        ddir = _domain_dir(root, d)
        ddir.mkdir(exist_ok=True)
        (ddir / "ids.json").write_text(
            json.dumps({"user_ids": ds.user_ids, "item_ids": ds.item_ids}), encoding="utf-8"
        )
        for part in PARTS:
            arr = np.ascontiguousarray(getattr(ds, part), dtype=np.int64).reshape(-1, 2)
            np.save(ddir / f"{part}.npy", arr, allow_pickle=False)
        meta["domains"][d] = {
            "n_users": ds.n_users,
            "n_items": ds.n_items,
            "n_old_users": ds.n_old_users,
            "n_old_items": ds.n_old_items,
            **{f"n_{part}": len(getattr(ds, part)) for part in PARTS},
        }
    # split.json last: a folder without it is an interrupted save, not a valid split.
    (root / "split.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
    return root


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise DatasetError(path, None, "missing file")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DatasetError(path, None, f"not valid JSON: {err}") from err


def load_split(split_dir: str | Path) -> InductiveSplit:
    """Read a folder written by :func:`save_split`; raises DatasetError if malformed."""
    root = Path(split_dir)
    meta_path = root / "split.json"
    meta = _read_json(meta_path)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise DatasetError(meta_path, None, f"not a {FORMAT} file")
    if meta.get("version") != VERSION:
        raise DatasetError(meta_path, None, f"unsupported version {meta.get('version')!r}")
    try:
        config = config_from_dict(meta["config"])
        domain_meta: dict[str, dict[str, int]] = dict(meta["domains"])
    except (KeyError, TypeError, ValueError) as err:
        raise DatasetError(meta_path, None, f"bad config/domains: {err}") from err

    domains: dict[str, DomainSplit] = {}
    for d, dm in domain_meta.items():
        try:
            ddir = _domain_dir(root, d)
        except ValueError as err:
            raise DatasetError(meta_path, None, str(err)) from err
        if not isinstance(dm, dict):
            raise DatasetError(meta_path, None, f"domain {d!r}: expected an object")
        ids = _read_json(ddir / "ids.json")
        try:
            user_ids = [str(x) for x in ids["user_ids"]]
            item_ids = [str(x) for x in ids["item_ids"]]
            n_old_users, n_old_items = int(dm["n_old_users"]), int(dm["n_old_items"])
        except (KeyError, TypeError, ValueError) as err:
            raise DatasetError(ddir / "ids.json", None, f"bad ids: {err}") from err
        if (len(user_ids), len(item_ids)) != (dm.get("n_users"), dm.get("n_items")):
            raise DatasetError(ddir / "ids.json", None, "id counts differ from split.json")
        if not (0 <= n_old_users <= len(user_ids) and 0 <= n_old_items <= len(item_ids)):
            raise DatasetError(meta_path, None, f"domain {d!r}: old counts out of range")
        pairs = {}
        for part in PARTS:
            path = ddir / f"{part}.npy"
            if not path.is_file():
                raise DatasetError(path, None, "missing file")
            try:
                arr = np.load(path, allow_pickle=False)
            except (OSError, ValueError) as err:
                raise DatasetError(path, None, f"not a readable .npy array: {err}") from err
            if arr.ndim != 2 or arr.shape[1] != 2 or not np.issubdtype(arr.dtype, np.integer):
                raise DatasetError(path, None, f"expected int [n, 2], got {arr.dtype} {arr.shape}")
            if len(arr) != dm.get(f"n_{part}"):
                raise DatasetError(path, None, "row count differs from split.json")
            if len(arr) and (
                arr.min() < 0
                or arr[:, 0].max() >= len(user_ids)
                or arr[:, 1].max() >= len(item_ids)
            ):
                raise DatasetError(path, None, "user/item index out of range")
            pairs[part] = arr.astype(np.int64, copy=False)
        domains[d] = DomainSplit(
            domain=d,
            user_ids=user_ids,
            item_ids=item_ids,
            n_old_users=n_old_users,
            n_old_items=n_old_items,
            **pairs,
        )
    return InductiveSplit(config=config, domains=domains)


def _user_lists(pairs: np.ndarray, n_users: int) -> list[list[int]]:
    """Per local user (0..n_users-1), its items in the order they appear in ``pairs``."""
    lists: list[list[int]] = [[] for _ in range(n_users)]
    for u, i in pairs.tolist():
        lists[u].append(i)
    return lists


def _write_inmo(path: Path, lists: list[list[int]]) -> None:
    """The anchor's ``write_lists``: ``"<u> <i> <i> ..."`` per user, ``"<u>"`` if none."""
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for u, items in enumerate(lists):
            f.write(" ".join([str(u)] + [str(i) for i in items]) + "\n")


def _write_csv(path: Path, header: list[str], rows: Any) -> None:
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)


def export_split(split: InductiveSplit, out_dir: str | Path) -> Path:
    """Write the plain-file export described in the module docstring; returns the folder."""
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    for d, ds in split.domains.items():
        ddir = _domain_dir(root, d)
        (ddir / "inmo").mkdir(parents=True, exist_ok=True)
        (ddir / "inmo_dropui").mkdir(exist_ok=True)
        for part in PARTS:
            pairs = getattr(ds, part)
            _write_csv(
                ddir / f"{part}.csv",
                ["user_id", "item_id"],
                ((ds.user_ids[u], ds.item_ids[i]) for u, i in pairs.tolist()),
            )
            lists = _user_lists(pairs, ds.n_users)
            _write_inmo(ddir / "inmo" / f"{part}.txt", lists)
            _write_inmo(
                ddir / "inmo_dropui" / f"{part}.txt",
                [[i for i in lists[u] if i < ds.n_old_items] for u in range(ds.n_old_users)],
            )
        xd_cold = np.zeros(ds.n_users, dtype=bool)
        xd_cold[split.cross_domain_cold_users(d)] = True
        new_u, new_i = ds.new_user_mask(), ds.new_item_mask()
        _write_csv(
            ddir / "users.csv",
            ["user_id", "is_new", "is_cross_domain_cold"],
            ((raw, int(new_u[j]), int(xd_cold[j])) for j, raw in enumerate(ds.user_ids)),
        )
        _write_csv(
            ddir / "items.csv",
            ["item_id", "is_new"],
            ((raw, int(new_i[j])) for j, raw in enumerate(ds.item_ids)),
        )
        with open(ddir / "inmo" / "user_map.tsv", "w", encoding="utf-8", newline="\n") as f:
            f.write("raw_user_id\tuser_id\n")
            f.writelines(f"{raw}\t{j}\n" for j, raw in enumerate(ds.user_ids))
        with open(ddir / "inmo" / "item_map.tsv", "w", encoding="utf-8", newline="\n") as f:
            f.write("raw_item_id\titem_id\n")
            f.writelines(f"{raw}\t{j}\n" for j, raw in enumerate(ds.item_ids))
    (root / "config.json").write_text(
        json.dumps(config_to_dict(split.config), indent=1), encoding="utf-8"
    )
    (root / "slices.json").write_text(json.dumps(slice_sizes(split), indent=1), encoding="utf-8")
    return root


def _slice(test: np.ndarray, keep: np.ndarray) -> dict[str, int]:
    """Test pairs selected by the row mask ``keep`` and the users they belong to."""
    return {
        "test_users": len(np.unique(test[keep, 0])),
        "test_pairs": int(keep.sum()),
    }


def slice_sizes(split: InductiveSplit) -> dict[str, dict[str, Any]]:
    """Per domain, the sizes of the split and of each evaluation slice (plain ints).

    Keys per domain: ``users``, ``items``, ``train`` (full training input), ``val``,
    ``test``, ``train_old`` (old x old pairs the model learns from), ``old_users``,
    ``new_users``, ``old_items``, ``new_items``, ``overlapping_users`` (this domain's users
    also present in another domain), ``cold_item_test_pairs`` (test pairs on new items,
    scored content-only), ``cross_domain_cold_users`` (``len(cross_domain_cold_users(d))``),
    ``degree_buckets`` (``"0"``, ``"1-5"``, ``"6-20"``, ``">20"`` by full-train item
    degree: number of ``items`` and their ``test_pairs``/``test_users``) and ``slices``
    (``all``, ``old_users``, ``new_users``, ``old_items``, ``new_items``,
    ``cross_domain_cold``: ``test_users`` = users with >= 1 test pair in the slice, i.e.
    those a metric is averaged over, and ``test_pairs``).
    """
    overlapping = split.overlapping_users()
    out: dict[str, dict[str, Any]] = {}
    for d, ds in split.domains.items():
        test = ds.test.reshape(-1, 2)
        new_u, new_i = ds.new_user_mask(), ds.new_item_mask()
        xd = split.cross_domain_cold_users(d)
        xd_mask = np.zeros(ds.n_users, dtype=bool)
        xd_mask[xd] = True
        t_new_u, t_new_i = new_u[test[:, 0]], new_i[test[:, 1]]
        degree = (
            np.bincount(ds.train[:, 1], minlength=ds.n_items)
            if len(ds.train)
            else (np.zeros(ds.n_items, dtype=np.int64))
        )
        buckets: dict[str, dict[str, int]] = {}
        for name, lo, hi in DEGREE_BUCKETS:
            in_bucket = (degree >= lo) & (degree <= hi)
            buckets[name] = {"items": int(in_bucket.sum()), **_slice(test, in_bucket[test[:, 1]])}
        out[d] = {
            "users": ds.n_users,
            "items": ds.n_items,
            "train": len(ds.train),
            "val": len(ds.val),
            "test": len(test),
            "train_old": len(ds.train_old()),
            "old_users": ds.n_old_users,
            "new_users": ds.n_users - ds.n_old_users,
            "old_items": ds.n_old_items,
            "new_items": ds.n_items - ds.n_old_items,
            "overlapping_users": sum(u in overlapping for u in ds.user_ids),
            "cold_item_test_pairs": int(t_new_i.sum()),
            "cross_domain_cold_users": len(xd),
            "degree_buckets": buckets,
            "slices": {
                "all": _slice(test, np.ones(len(test), dtype=bool)),
                "old_users": _slice(test, ~t_new_u),
                "new_users": _slice(test, t_new_u),
                "old_items": _slice(test, ~t_new_i),
                "new_items": _slice(test, t_new_i),
                "cross_domain_cold": _slice(test, xd_mask[test[:, 0]]),
            },
        }
    return out
