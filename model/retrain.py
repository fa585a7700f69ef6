"""Retraining with a gate (no store, no registry here; app/learning/retrain_run.py drives it).

1. :func:`split_by_time`: the newest interactions of an exported dataset (a share of the
   rows, or the last N days before the newest row) become the *evaluation window*; the
   rest becomes the training folder (the window goes to its ``holdout.csv``, so the next
   export still sees those rows, model/data/writer.py).
2. The candidate is trained on the rest by the usual pipeline (``train_run``).
3. :func:`window_split` builds one evaluation split from the whole export: input graph =
   every pair before the window, targets = the window's pairs a user did not already
   have; *old* users/items = those with an interaction before the window. Users who
   appear only in the window are scored from their own earlier rows (their items split
   by time: the earlier half is input, the rest targets); too few rows: left out, counted.
4. :func:`score_on_window` scores a bundle on that split with the same code as every
   offline number (``model.evaluation.evaluate`` over ``MICRecRanker``: fold-in, the
   bundle's score blend, all slices, per domain; item vectors and the prior from the
   bundle's own training graph, as it serves). A bundle was trained on its own split,
   whose local ids differ; :func:`on_split` maps its template rows onto the window
   split's ids by raw id (an entity the bundle never saw is folded in, as the service
   does), so candidate and current are scored on exactly the same users and targets.
5. :func:`model.retrain_gate.gate`: the paired comparison over the scored users (mean
   difference above a margin, bootstrap interval, a minimum of users; a tie keeps the
   current version).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from model.bundle import Bundle
from model.data.dataset import Dataset
from model.data.loading import INTERACTIONS_FILE, _rows
from model.data.split import DomainSplit, InductiveSplit, SplitConfig
from model.data.writer import DatasetWriter, Row, read_items
from model.encoders.base import ItemFeatures
from model.evaluation import evaluate
from model.nn.graph import TemplateMap
from model.nn.micrec import MICRec
from model.rankers import MICRecRanker
from model.retrain_gate import SLICES, Decision, Gate, PerUser, decision_json, gate, overall
from model.retrain_gate import Results as Results

__all__ = [  # the gate lives in model/retrain_gate.py; these names stay importable here
    "SLICES", "Decision", "Gate", "decision_json", "gate", "overall",
]  # fmt: skip

DAY_S = 86400


@dataclass(frozen=True)
class Window:
    """The evaluation window, taken from the rows newer than the current bundle's training
    data (neither model has seen them): the newest ``fraction`` of those, or (``days``
    set) those of the last ``days`` days before the newest row. Rows sharing the cutoff
    timestamp stay in training, so a window may be slightly smaller than asked.
    ``min_user_rows``: a user who appears only in the window needs this many distinct
    items there to be scored (inputs + targets, :func:`window_split`)."""

    fraction: float = 0.1
    days: float | None = None
    min_user_rows: int = 2

    def __post_init__(self) -> None:
        if self.days is None and not 0.0 < self.fraction < 1.0:
            raise ValueError(f"window fraction must be in (0, 1), got {self.fraction}")
        if self.days is not None and self.days <= 0:
            raise ValueError(f"window days must be > 0, got {self.days}")
        if self.min_user_rows < 2:
            raise ValueError(f"window min_user_rows must be >= 2, got {self.min_user_rows}")

    def cutoff(self, stamps: np.ndarray, trained_until: int) -> int:
        """Rows with timestamp > cutoff are in the window; cutoff >= ``trained_until``."""
        new = np.sort(stamps[stamps > trained_until])
        if len(new) == 0:
            raise NothingNew(
                f"no interaction newer than the current bundle's training data "
                f"(timestamp {trained_until}): nothing to evaluate a candidate on"
            )
        if self.days is not None:
            return max(trained_until, int(new[-1] - self.days * DAY_S))
        k = min(len(new), max(1, round(len(new) * self.fraction)))  # rows asked for
        return int(new[len(new) - k - 1]) if k < len(new) else trained_until


class NothingNew(ValueError):
    """No interaction arrived since the current bundle's training data (nothing to do)."""


@dataclass
class WindowSplit:
    cutoff: int
    train_dir: Path
    n_train: int
    n_window: int


def _stamps(export_dir: Path) -> np.ndarray:
    cols, rows = _rows(export_dir / INTERACTIONS_FILE, ("user_id", "item_id", "domain"))
    if "timestamp" not in cols:
        raise ValueError(f"{export_dir}: interactions have no timestamp column (not an export?)")
    c = cols["timestamp"]
    return np.fromiter((int(float(r[c])) for _, r in rows), dtype=np.int64)


def split_by_time(
    export_dir: Path, train_dir: Path, window: Window, trained_until: int
) -> WindowSplit:
    """Write ``train_dir``: the export's items, rows up to the cutoff as interactions.csv,
    the window's rows as holdout.csv (streamed; one int64 per row held for the cutoff).
    ``trained_until``: the newest timestamp the current bundle was trained on."""
    stamps = _stamps(export_dir)
    cutoff = window.cutoff(stamps, trained_until)
    writer = DatasetWriter(train_dir, replace=True)
    try:
        for rec, source in read_items(export_dir):
            writer.add_item(rec, source or "bundle")
        cols, rows = _rows(export_dir / INTERACTIONS_FILE, ("user_id", "item_id", "domain"))
        c_src = cols.get("source")
        for _, r in rows:
            ts = int(float(r[cols["timestamp"]]))
            row = Row(
                r[cols["user_id"]],
                r[cols["item_id"]],
                r[cols["domain"]],
                ts,
                r[c_src] if c_src is not None else "bundle",
            )
            writer.add_row(row, holdout=ts > cutoff)
        n_window = int((stamps > cutoff).sum())
        writer.commit({"subset_of": str(Path(export_dir).resolve()), "cutoff": cutoff})
    except BaseException:
        writer.abort()
        raise
    return WindowSplit(cutoff, Path(train_dir), len(stamps) - n_window, n_window)


def _pairs(
    users: np.ndarray, items: np.ndarray, upos: dict[str, int], ipos: dict[str, int]
) -> np.ndarray:
    p = [(upos[u], ipos[i]) for u, i in zip(users, items, strict=True)]
    return np.unique(np.asarray(p, dtype=np.int64).reshape(-1, 2), axis=0)


@dataclass
class WindowEval:
    """The window's evaluation split and, per domain, who and what it scores (counts)."""

    split: InductiveSplit
    counts: dict[str, dict[str, int]]


def _window_only_rows(
    inter: Any, after: np.ndarray, users_before: set[str], min_rows: int
) -> tuple[list[tuple[str, str]], list[tuple[str, str]], dict[str, int]]:
    """Window-only users' rows in time order split per user: the earlier half of their
    distinct items (at least one) become inputs, the rest targets; users with fewer than
    ``min_rows`` distinct items are left out (counted)."""
    idx = np.flatnonzero(after)
    idx = idx[np.argsort(inter.timestamp[idx], kind="stable")]
    per_user: dict[str, list[str]] = {}
    for k in idx:
        u = inter.user[k]
        if u not in users_before:
            items = per_user.setdefault(u, [])
            if inter.item[k] not in items:
                items.append(inter.item[k])
    inputs, targets = [], []
    counts = {"new_users": 0, "new_inputs": 0, "left_out_users": 0, "left_out_rows": 0}
    for u, items in per_user.items():
        if len(items) < min_rows:
            counts["left_out_users"] += 1
            counts["left_out_rows"] += len(items)
            continue
        half = max(1, len(items) // 2)
        inputs += [(u, i) for i in items[:half]]
        targets += [(u, i) for i in items[half:]]
        counts["new_users"] += 1
        counts["new_inputs"] += half
    return inputs, targets, counts


def _as_arrays(pairs: list[tuple[str, str]]) -> tuple[np.ndarray, np.ndarray]:
    if not pairs:
        return np.zeros(0, dtype=object), np.zeros(0, dtype=object)
    u, i = zip(*pairs, strict=True)
    return np.asarray(u, dtype=object), np.asarray(i, dtype=object)


def window_split(
    dataset: Dataset, cutoff: int, domains: list[str], *, min_rows: int = 2
) -> WindowEval:
    """The evaluation split of ``dataset`` (loaded from the whole export) at ``cutoff``.

    Input graph = every pair before the window, plus the earlier half of each window-only
    user's items (:func:`_window_only_rows`: users who appear only in the window are
    scored from their own earlier rows, never from the prior alone); targets = old users'
    window pairs (their pre-window history is their input) and window-only users' later
    halves, minus pairs already in the input (a re-bought item is masked, not a target).
    Old users/items = those with an interaction before the window."""
    inter = dataset.interactions
    assert inter.timestamp is not None, "an export has timestamps"
    out: dict[str, DomainSplit] = {}
    counts: dict[str, dict[str, int]] = {}
    for d in domains:
        rows = inter.domain == d
        before = rows & (inter.timestamp <= cutoff)
        after = rows & (inter.timestamp > cutoff)
        users_before = sorted(set(inter.user[before].tolist()))
        users_after = sorted(set(inter.user[after].tolist()) - set(users_before))
        items_before = sorted(set(inter.item[before].tolist()))
        seen = set(items_before)
        items_rest = sorted(
            i for i, rec in dataset.items.items() if rec.domain == d and i not in seen
        )
        user_ids, item_ids = users_before + users_after, items_before + items_rest
        upos = {u: k for k, u in enumerate(user_ids)}
        ipos = {i: k for k, i in enumerate(item_ids)}

        old = set(users_before)
        new_in, new_out, c = _window_only_rows(inter, after, old, min_rows)
        in_u, in_i = _as_arrays(new_in)
        out_u, out_i = _as_arrays(new_out)
        returning = after & np.fromiter((u in old for u in inter.user), bool, len(inter))
        train = _pairs(
            np.concatenate([inter.user[before], in_u]),
            np.concatenate([inter.item[before], in_i]),
            upos,
            ipos,
        )
        test = _pairs(
            np.concatenate([inter.user[returning], out_u]),
            np.concatenate([inter.item[returning], out_i]),
            upos,
            ipos,
        )
        if len(train) and len(test):  # a re-bought item is masked, not a target
            known = {(int(u), int(i)) for u, i in train}
            test = test[[(int(u), int(i)) not in known for u, i in test]].reshape(-1, 2)
        is_new = test[:, 0] >= len(users_before)
        counts[d] = {
            "old_users": len(np.unique(test[~is_new, 0])),
            "old_targets": int((~is_new).sum()),
            **c,
            "new_targets": int(is_new.sum()),
        }
        out[d] = DomainSplit(
            domain=d,
            user_ids=user_ids,
            item_ids=item_ids,
            n_old_users=len(users_before),
            n_old_items=len(items_before),
            train=train,
            val=np.zeros((0, 2), dtype=np.int64),
            test=test,
        )
    return WindowEval(InductiveSplit(SplitConfig(k_core=0, new_ratio=0.0), out), counts)


@dataclass
class FixedTemplateMap(TemplateMap):
    """A bundle's template rows re-indexed for another split: the token rows stay where
    the bundle's table has them even when some template entity is absent here."""

    user_tokens_at: int = 0

    @property
    def user_token(self) -> int:
        return self.user_tokens_at

    @property
    def item_token(self) -> int:
        return self.user_tokens_at + 1

    @property
    def n_rows(self) -> int:
        return self.user_tokens_at + 2


def on_split(bundle: Bundle, split: InductiveSplit) -> MICRec:
    """``bundle.model`` with its templates mapped onto ``split``'s local ids (by raw id)."""
    model = copy.copy(bundle.model)  # shares every parameter; only ``templates`` differs
    model.templates = {}
    for d in bundle.model.domains:
        t, st, ds = bundle.model.templates[d], bundle.domains[d], split.domains[d]
        upos = {u: k for k, u in enumerate(st.user_ids)}
        ipos = {i: k for k, i in enumerate(st.item_ids)}
        model.templates[d] = FixedTemplateMap(
            user_rows=np.array([t.user_rows[upos[u]] if u in upos else -1 for u in ds.user_ids]),
            item_rows=np.array([t.item_rows[ipos[i]] if i in ipos else -1 for i in ds.item_ids]),
            user_tokens_at=t.user_token,
        )
    return model


def served_graph(bundle: Bundle, split: InductiveSplit) -> dict[str, np.ndarray]:
    """Per domain, the bundle's own training graph (its saved histories) in ``split``'s
    local ids: what its item vectors and prior are computed from when it serves. Pairs
    whose user or item the split lacks (an erased user) are dropped."""
    out = {}
    for d, ds in split.domains.items():
        st = bundle.domains[d]
        upos = {u: k for k, u in enumerate(ds.user_ids)}
        ipos = {i: k for k, i in enumerate(ds.item_ids)}
        users = np.repeat(np.arange(len(st.user_ids)), np.diff(st.history_ptr))
        u = np.array([upos.get(st.user_ids[k], -1) for k in users], dtype=np.int64)
        i = np.array([ipos.get(st.item_ids[k], -1) for k in st.history_items], dtype=np.int64)
        keep = (u >= 0) & (i >= 0)
        out[d] = np.unique(np.stack([u[keep], i[keep]], axis=1).reshape(-1, 2), axis=0)
    return out


def score_on_window(
    name: str,
    bundle: Bundle,
    split: InductiveSplit,
    features: ItemFeatures | None,
    per_user: PerUser | None = None,
) -> Results:
    """Every slice of every domain of ``split`` for ``bundle`` (module docstring, 4): item
    vectors and the blend's prior from the bundle's own training graph (as it serves; the
    window's rows would otherwise give the current bundle what only a retrain gives it),
    users from their histories in ``split``;
    ``per_user`` (a dict to fill) receives the per-user values the gate pairs."""
    domains = [d for d in split.domains if d in bundle.model.domains]
    restricted = InductiveSplit(split.config, {d: split.domains[d] for d in domains})
    ranker = MICRecRanker(
        name,
        on_split(bundle, restricted),
        restricted,
        features,
        blend=bundle.blend,
        graph=served_graph(bundle, restricted),
    )
    return evaluate(ranker, restricted, per_user=per_user)
