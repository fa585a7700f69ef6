"""The retrain gate: candidate vs current, paired over the users of the window.

Both bundles are scored on exactly the same window split (model/retrain.py), so every
scored user (a user scored in two domains counts once per domain: the unit of the
user-weighted mean) has one value of the gate metric per model. The rule, over the
per-user differences ``d = candidate - current``:

1. at least ``min_users`` users scored (fewer: refused, too little evidence);
2. mean(d) > ``margin`` (default 0: strictly better on average, so a tie keeps the
   current version);
3. the low end of the ``confidence`` bootstrap interval of mean(d) (users resampled with
   replacement, seeded, so a run is reproducible) is > -``tolerance`` (default 0: the
   candidate is better with that confidence; a tolerance lets through a candidate that
   may plausibly be that much worse).

A candidate that learned nothing scores about the same as the current one on the users
the window holds: its mean difference is near 0 and its interval straddles 0, so it is
refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from model.evaluation import DEGREE_BUCKETS

Results = dict[str, dict[str, dict[str, float | None]]]
PerUser = dict[tuple[str, str], dict[str, np.ndarray]]
"""(domain, slice) -> {"users": local ids, metric: per-user values} (model.evaluation)."""

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
    """The rule of the module docstring on ``metric`` of ``slice``."""

    metric: str = "ndcg@20"
    slice: str = "all"
    tolerance: float = 0.0
    margin: float = 0.0
    min_users: int = 30
    confidence: float = 0.95
    resamples: int = 2000
    seed: int = 0

    def __post_init__(self) -> None:
        if self.slice not in SLICES:
            raise ValueError(f"gate slice {self.slice!r} is not one of {', '.join(SLICES)}")
        if not 0.5 <= self.confidence < 1.0:
            raise ValueError(f"gate confidence must be in [0.5, 1), got {self.confidence}")
        if not -1.0 <= self.margin <= 1.0:
            raise ValueError(f"gate margin must be in [-1, 1], got {self.margin}")
        if self.min_users < 1 or self.resamples < 100:
            raise ValueError("gate min_users must be >= 1 and resamples >= 100")


def overall(results: Results, metric: str, slice_name: str) -> float | None:
    """User-weighted mean of ``metric`` of ``slice_name`` over the domains that have it."""
    num = den = 0.0
    for slices in results.values():
        row = slices.get(slice_name) or {}
        value, n = row.get(metric), row.get("n_users") or 0.0
        if value is not None and n > 0:
            num, den = num + value * n, den + n
    return num / den if den > 0 else None


def paired_differences(candidate: PerUser, current: PerUser, g: Gate) -> np.ndarray:
    """candidate - current of ``g.metric`` per scored user of ``g.slice``, all domains."""
    parts = []
    for key, cand in sorted(candidate.items()):
        if key[1] != g.slice or key not in current:
            continue
        cur = current[key]
        if not np.array_equal(cand["users"], cur["users"]):
            raise ValueError(f"{key}: candidate and current were scored on different users")
        parts.append(cand[g.metric] - cur[g.metric])
    return np.concatenate(parts) if parts else np.zeros(0)


def bootstrap_interval(d: np.ndarray, g: Gate) -> tuple[float, float]:
    """The ``g.confidence`` percentile interval of mean(d), users resampled with
    replacement ``g.resamples`` times (seeded)."""
    rng = np.random.default_rng(g.seed)
    n = len(d)
    chunk = max(1, 2_000_000 // n)  # bounded memory: chunk x n indices at a time
    means = []
    for start in range(0, g.resamples, chunk):
        k = min(chunk, g.resamples - start)
        means.append(d[rng.integers(0, n, size=(k, n))].mean(axis=1))
    m = np.concatenate(means)
    a = (1.0 - g.confidence) / 2
    return float(np.quantile(m, a)), float(np.quantile(m, 1.0 - a))


@dataclass
class Decision:
    promote: bool
    candidate: float | None
    current: float | None
    reason: str
    gate: Gate = field(default_factory=Gate)
    users: int = 0
    """Users whose paired difference decided (one per user and domain)."""
    mean_difference: float | None = None
    interval: tuple[float, float] | None = None


def gate(
    candidate: Results,
    current: Results,
    g: Gate,
    cand_users: PerUser | None = None,
    cur_users: PerUser | None = None,
) -> Decision:
    """The rule of the module docstring (per-user values from ``model.evaluation.evaluate``'s
    ``per_user``); without them (no per-user values) nothing can be decided: refused."""
    c, p = overall(candidate, g.metric, g.slice), overall(current, g.metric, g.slice)
    what = f"{g.metric} of {g.slice}"
    d = paired_differences(cand_users or {}, cur_users or {}, g)
    n = len(d)
    if c is None or p is None or n == 0:
        return Decision(False, c, p, f"{what} is n/a on the window (no user to score)", g)
    if n < g.min_users:
        why = f"only {n} users scored on the window (< min_users {g.min_users}): too few to decide"
        return Decision(False, c, p, why, g, n)
    mean = float(d.mean())
    lo, hi = bootstrap_interval(d, g)
    facts = (
        f"candidate {what} {c:.4f} vs current {p:.4f} over {n} users: mean paired "
        f"difference {mean:+.4f}, {100 * g.confidence:g} % interval [{lo:+.4f}, {hi:+.4f}]"
    )
    if mean <= g.margin:
        why = f"{facts}; not above margin {g.margin:g}" + (" (a tie)" if mean == 0 else "")
        return Decision(False, c, p, why, g, n, mean, (lo, hi))
    if lo <= -g.tolerance:
        why = f"{facts}; interval reaches -tolerance {-g.tolerance:g} (not significant)"
        return Decision(False, c, p, why, g, n, mean, (lo, hi))
    why = f"{facts} > margin {g.margin:g}, interval above -tolerance {-g.tolerance:g}"
    return Decision(True, c, p, why, g, n, mean, (lo, hi))


def decision_json(d: Decision) -> dict[str, Any]:
    return {
        "promote": d.promote,
        "candidate": d.candidate,
        "current": d.current,
        "reason": d.reason,
        "metric": d.gate.metric,
        "slice": d.gate.slice,
        "tolerance": d.gate.tolerance,
        "margin": d.gate.margin,
        "min_users": d.gate.min_users,
        "confidence": d.gate.confidence,
        "users": d.users,
        "mean_difference": d.mean_difference,
        "interval": list(d.interval) if d.interval is not None else None,
    }
