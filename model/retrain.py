"""Retraining with a gate (no store, no registry here; app/learning/retrain_run.py drives it).

1. :func:`split_by_time`: the newest interactions of an exported dataset (a share of the
   rows, or the last N days before the newest row) become the *evaluation window*; the
   rest becomes the training folder (the window goes to its ``holdout.csv``, so the next
   export still sees those rows, model/data/writer.py).
2. The candidate is trained on the rest by the usual pipeline (``train_run``).
3. :func:`window_split` builds one evaluation split from the whole export: input graph =
   every pair before the window, targets = the window's pairs a user did not already
   have; *old* users/items = those with an interaction before the window.
4. :func:`score_on_window` scores a bundle on that split with the same code as every
   offline number (``model.evaluation.evaluate`` over ``MICRecRanker``: fold-in, the
   bundle's score blend, all slices, per domain). A bundle was trained on its own split,
   whose local ids differ; :func:`on_split` maps its template rows onto the window
   split's ids by raw id (an entity the bundle never saw is folded in, as the service
   does), so candidate and current are scored on exactly the same users and targets.
5. :func:`gate`: promote when candidate >= current - tolerance on one metric of one
   slice, over all domains (user-weighted mean).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from model.bundle import Bundle
from model.data.dataset import Dataset
from model.data.loading import INTERACTIONS_FILE, _rows
from model.data.split import DomainSplit, InductiveSplit, SplitConfig
from model.data.writer import DatasetWriter, Row, read_items
from model.encoders.base import ItemFeatures
from model.evaluation import DEGREE_BUCKETS, evaluate
from model.nn.graph import TemplateMap
from model.nn.micrec import MICRec
from model.rankers import MICRecRanker

DAY_S = 86400
Results = dict[str, dict[str, dict[str, float | None]]]


@dataclass(frozen=True)
class Window:
    """The evaluation window, taken from the rows newer than the current bundle's training
    data (neither model has seen them): the newest ``fraction`` of those, or (``days``
    set) those of the last ``days`` days before the newest row. Rows sharing the cutoff
    timestamp stay in training, so a window may be slightly smaller than asked."""

    fraction: float = 0.1
    days: float | None = None

    def __post_init__(self) -> None:
        if self.days is None and not 0.0 < self.fraction < 1.0:
            raise ValueError(f"window fraction must be in (0, 1), got {self.fraction}")
        if self.days is not None and self.days <= 0:
            raise ValueError(f"window days must be > 0, got {self.days}")

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


def window_split(dataset: Dataset, cutoff: int, domains: list[str]) -> InductiveSplit:
    """The evaluation split of ``dataset`` (loaded from the whole export) at ``cutoff``."""
    inter = dataset.interactions
    assert inter.timestamp is not None, "an export has timestamps"
    out: dict[str, DomainSplit] = {}
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

        train = _pairs(inter.user[before], inter.item[before], upos, ipos)
        test = _pairs(inter.user[after], inter.item[after], upos, ipos)
        if len(train) and len(test):  # a re-bought item is masked, not a target
            known = {(int(u), int(i)) for u, i in train}
            test = test[[(int(u), int(i)) not in known for u, i in test]].reshape(-1, 2)
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
    return InductiveSplit(SplitConfig(k_core=0, new_ratio=0.0), out)


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


def score_on_window(
    name: str, bundle: Bundle, split: InductiveSplit, features: ItemFeatures | None
) -> Results:
    """Every slice of every domain of ``split`` for ``bundle`` (module docstring, 4)."""
    domains = [d for d in split.domains if d in bundle.model.domains]
    restricted = InductiveSplit(split.config, {d: split.domains[d] for d in domains})
    ranker = MICRecRanker(
        name, on_split(bundle, restricted), restricted, features, blend=bundle.blend
    )
    return evaluate(ranker, restricted)


SLICES = (
    "all",
    "old_users",
    "new_users",
    "old_items",
    "new_items",
    "old_users_old_items",
    "cold_items",
    "cold_items_vs_all",
    "cd_cold_users",
    *(name for name, _, _ in DEGREE_BUCKETS),
)
"""The slices of ``model.evaluation.build_slices``."""


@dataclass(frozen=True)
class Gate:
    """Promote when candidate >= current - ``tolerance`` on ``metric`` of ``slice``."""

    metric: str = "ndcg@20"
    slice: str = "all"
    tolerance: float = 0.0

    def __post_init__(self) -> None:
        if self.slice not in SLICES:
            raise ValueError(f"gate slice {self.slice!r} is not one of {', '.join(SLICES)}")


def overall(results: Results, metric: str, slice_name: str) -> float | None:
    """User-weighted mean of ``metric`` of ``slice_name`` over the domains that have it."""
    num = den = 0.0
    for slices in results.values():
        row = slices.get(slice_name) or {}
        value, n = row.get(metric), row.get("n_users") or 0.0
        if value is not None and n > 0:
            num, den = num + value * n, den + n
    return num / den if den > 0 else None


@dataclass
class Decision:
    promote: bool
    candidate: float | None
    current: float | None
    reason: str
    gate: Gate = field(default_factory=Gate)


def gate(candidate: Results, current: Results, g: Gate) -> Decision:
    c, p = overall(candidate, g.metric, g.slice), overall(current, g.metric, g.slice)
    what = f"{g.metric} of {g.slice}"
    if c is None or p is None:
        return Decision(False, c, p, f"{what} is n/a on the window (no user to score)", g)
    if c >= p - g.tolerance:
        why = f"candidate {what} {c:.4f} >= current {p:.4f} - tolerance {g.tolerance:g}"
        return Decision(True, c, p, why, g)
    why = f"candidate {what} {c:.4f} < current {p:.4f} - tolerance {g.tolerance:g}"
    return Decision(False, c, p, why, g)


def decision_json(d: Decision) -> dict[str, Any]:
    return {
        "promote": d.promote,
        "candidate": d.candidate,
        "current": d.current,
        "reason": d.reason,
        "metric": d.gate.metric,
        "slice": d.gate.slice,
        "tolerance": d.gate.tolerance,
    }
