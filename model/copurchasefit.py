"""Fitting the cross-domain co-purchase block (model.nn.copurchase) and its weight.

The block is fitted once per blend fit on the anchors' training rows (``anchor_rows``);
its weight is chosen for users new to a domain on top of the plain cross-domain fit
(model.blendfit), on the pseudo-cold validation users.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import numpy as np

from model.data.split import InductiveSplit
from model.nn.blend import BlendWeights
from model.nn.copurchase import CoPurchase, fit_copurchase


class ValidationSlice(Protocol):
    """What the weight fit reads of a validation slice (model.blendfit's slice parts)."""

    name: str

    def spreads(self) -> tuple[float, float, float, float]: ...

    def ndcg(self, w: BlendWeights, k: int = 20) -> float: ...


log = logging.getLogger(__name__)

COPURCHASE_GRID = (0.02, 0.05, 0.1, 0.15, 0.2, 0.3)
"""Weights of the co-purchase block tried (in units of its spread, as the other weights).
Small: on amazon-arts-office it helped users new to a domain at 0.05-0.1 of the served
score's spread and hurt from 0.25 on (docs/results/ablation/copurchase.md)."""


def anchor_rows(split: InductiveSplit, domain: str) -> np.ndarray:
    """The domain's training rows (old users x old items) the co-purchase block may count:
    the pseudo-cold validation users' rows are left out, since validation hides exactly
    those rows from them (as the cross-domain map never trains on them)."""
    rows = split.domains[domain].train_old()
    return rows[~np.isin(rows[:, 0], split.pseudo_cold_users(domain))]


def fit_copurchase_weight(
    part: ValidationSlice, label: str, plain: list[dict[str, Any]]
) -> tuple[BlendWeights, list[dict[str, Any]]]:
    """The plain cross-domain fit's choice (``plain[-1]``) plus the co-purchase block at
    each weight of ``COPURCHASE_GRID`` (the other weights fixed): the weight with the
    highest validation NDCG@20 of the pseudo-cold users, 0 (no block) unless one beats it.

    Why a short grid on the fixed choice: a search of every weight at once found, on
    noise, combinations better by chance; one weight over six small values has little to
    overfit. Why no one-standard-error rule here (the plain fit has one): on the 500
    pseudo-cold users of the fit the block's gain was below one standard error, and the
    rule refused it on all four seed-0 fits it was tried on (arts-office and office at
    10 %; docs/results/ablation/copurchase.md)."""
    sm, sp, sc, sq = part.spreads()
    chosen = {k: float(v) for k, v in plain[-1]["chosen"].items()}
    ref = plain[-1]["reference"]

    def weights(p: dict[str, float]) -> BlendWeights:
        return BlendWeights(
            p["model"] / sm, p["prior"] / sp, p.get("content", 0.0) / sc, p["copurchase"] / sq
        )

    trials: list[dict[str, Any]] = []
    for v in (0.0, *COPURCHASE_GRID):
        p = {**chosen, "copurchase": v}
        ndcg = part.ndcg(weights(p))
        value = ndcg / ref[0][0] if ref[0][0] > 0 else 1.0
        trials.append({"params": p, "val_ndcg@20": {part.name: ndcg}, "objective": value})
    # max keeps the first of equals: 0 (no block) unless a weight does strictly better
    params = dict(max(trials, key=lambda t: float(t["objective"]))["params"])
    log.info("blend %s+copurchase: weight %.3g", label, params["copurchase"])
    trials.append(
        {
            "chosen": params,
            "main_ndcg": part.ndcg(weights(params)),
            "objective": max(float(t["objective"]) for t in trials if t["params"] == params),
            "reference": ref,
        }
    )
    return weights(params), trials


def fit_copurchase_block(split: InductiveSplit, rank: int, seed: int = 0) -> CoPurchase | None:
    """The block of ``split``'s domains at ``rank``, from their anchor rows."""
    return fit_copurchase(
        {d: (ds.user_ids, ds.n_items, anchor_rows(split, d)) for d, ds in split.domains.items()},
        rank,
        seed,
    )
