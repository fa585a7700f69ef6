"""The weights of the cross-domain co-purchase boost (model.nn.copurchase), chosen on
validation on top of the plain blend fit (model.blendfit):

- users new to a domain: on the pseudo-cold validation users (whose target-domain rows
  the transitions then do not count: the slice's inputs hide them), NDCG@20;
- users with history in the domain (``[blend] copurchase_warm``): on the validation slices
  the blend judges them on (``all`` and the new / cold / rarely bought item slices), the
  blend fit's objective (``model.blendparts.blend_objective``), with a slice already
  below its best single part charged for what it loses against the blend without the
  boost (see :func:`fit_warm_copurchase`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from model.blendparts import addon_reference, blend_objective
from model.data.split import InductiveSplit
from model.evaluation import PSEUDO_COLD_SLICE, evaluate
from model.nn.blend import Blend, BlendWeights

log = logging.getLogger(__name__)

COPURCHASE_GRID = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
"""Weights of the co-purchase boost tried, in units of the spread of the user's served
score over items (the boost is in [0, 1], 1 for the user's best co-purchased item). The
probe that motivated it chose 0.5-2 on amazon-arts-office
(docs/results/ablation/copurchase.md)."""

NdcgByDomain = Callable[[Mapping[str, BlendWeights]], Mapping[str, float]]
"""Validation NDCG@20 of every pseudo-cold user per domain, the cross-domain weights of
each domain given (model.blendfit evaluates the blend being fitted)."""


def fit_copurchase_weights(
    plain: Mapping[str, BlendWeights], units: Mapping[str, float], ndcg: NdcgByDomain
) -> tuple[dict[str, BlendWeights], dict[str, dict[str, Any]]]:
    """Per domain, the plain cross-domain fit's weights (``plain``) plus the co-purchase
    boost at each value of ``COPURCHASE_GRID`` x ``units[domain]`` (the spread of the
    domain's served score): the value with the highest validation NDCG@20 over *every*
    pseudo-cold user, 0 (no boost) unless one does strictly better. Returns the weights
    and per domain a record {"unit", "chosen", "val_ndcg@20": {grid value: NDCG}}.

    Why every pseudo-cold user and not the blend's seeded sample of ``max_users``: on the
    500-user sample the best value moved to the edge of the grid by chance (8 on
    amazon-arts-office seed 0, where all 818 users, and test, peaked at 1-2 and 8 was
    below no boost; docs/results/ablation/copurchase.md). Why a short grid on the fixed
    choice: a search of every weight at once found, on noise, combinations better by
    chance; one weight over six values has little to overfit. Domains are independent
    (a domain's users are ranked with its own weights), so one evaluation per value
    serves every domain."""
    curves: dict[str, dict[float, float]] = {d: {} for d in plain}
    for g in (0.0, *COPURCHASE_GRID):
        trial = {d: replace(w, copurchase=g * units[d]) for d, w in plain.items()}
        for d, v in ndcg(trial).items():
            if d in curves:
                curves[d][g] = float(v)
    out: dict[str, BlendWeights] = {}
    report: dict[str, dict[str, Any]] = {}
    for d, curve in curves.items():
        # max keeps the first of equals: 0 (no boost) unless a value does strictly better
        best = max(curve, key=lambda g: curve[g]) if curve else 0.0
        out[d] = replace(plain[d], copurchase=best * units[d])
        report[d] = {
            "unit": units[d],
            "chosen": best,
            "val_ndcg@20": {f"{g:g}": v for g, v in curve.items()},
        }
        log.info("blend %s/cross_domain+copurchase: %g x the score spread", d, best)
    return out, report


def evaluate_pseudo_cold(
    blend: Blend,
    split: InductiveSplit,
    ranker: Any,
    weights: Mapping[str, BlendWeights],
    *,
    domains: Sequence[str] | None = None,
    per_user: dict[tuple[str, str], dict[str, np.ndarray]] | None = None,
) -> dict[str, dict[str, dict[str, float | None]]]:
    """The pseudo-cold validation slice evaluated with ``weights`` as the blend's
    cross-domain weights per domain (the blend's own weights are restored after);
    ``per_user`` as in model.evaluation.evaluate."""
    saved = blend.weights
    blend.weights = {d: {"cross_domain": w} for d, w in weights.items()}
    try:  # the ranker reads the blend's weights (and transitions) when it binds
        return evaluate(
            ranker,
            split,
            domains=domains,
            ks=(20,),
            stage="val",
            only=[PSEUDO_COLD_SLICE],
            per_user=per_user,
        )
    finally:
        blend.weights = saved


def fit_copurchase_for_rule(
    blend: Blend,
    split: InductiveSplit,
    ranker: Any,
    cross: dict[str, tuple[BlendWeights, dict[str, Any]]],
    units: dict[str, float],
    pops: Sequence[float] = (0.0,),
) -> None:
    """The co-purchase boost's weight of each domain for one cross-domain rule, on every
    pseudo-cold validation user, for transitions fitted with each popularity exponent of
    ``pops`` (``CoPurchase.pop``): per domain the (exponent, weight) with the highest
    validation NDCG@20, the first of equals (list 0 first: no discount unless one does
    strictly better). ``cross`` is updated: its weights, its record's main NDCG (which
    chooses the rule, on the same users) and the exponent
    (``record["copurchase"]["pop"]``; :func:`chosen_pop` reads them back)."""
    assert blend.copurchase is not None

    def ndcg(trial: Mapping[str, BlendWeights]) -> dict[str, float]:
        res = evaluate_pseudo_cold(blend, split, ranker, trial)
        return {d: float(res[d][PSEUDO_COLD_SLICE]["ndcg@20"] or 0.0) for d in trial}

    plain = {d: w for d, (w, _) in cross.items() if d in units}
    saved_pop = dict(blend.copurchase.pop)
    best: dict[str, tuple[float, float, BlendWeights, dict[str, Any]]] = {}
    by_pop: dict[str, dict[str, Any]] = {d: {} for d in plain}
    for p in pops:
        blend.copurchase.pop = {d: p for d in split.domains}
        chosen, report = fit_copurchase_weights(plain, units, ndcg)
        for d, w in chosen.items():
            value = report[d]["val_ndcg@20"][f"{report[d]['chosen']:g}"]
            by_pop[d][f"{p:g}"] = report[d]
            if d not in best or value > best[d][0]:
                best[d] = (value, p, w, report[d])
    blend.copurchase.pop = saved_pop
    for d, (value, p, w, fit) in best.items():
        rec = cross[d][1]
        rec["weights"] = w.to_dict()
        rec["copurchase"] = {**fit, "pop": p, "by_pop": by_pop[d]}
        rec["trials"][-1]["main_ndcg"] = value
        cross[d] = (w, rec)
        log.info("blend %s/cross_domain+copurchase: popularity exponent %g", d, p)


def chosen_pop(cross: Mapping[str, tuple[BlendWeights, Mapping[str, Any]]]) -> dict[str, float]:
    """The popularity exponent :func:`fit_copurchase_for_rule` chose per domain (0 where
    it did not run)."""
    return {d: float(rec.get("copurchase", {}).get("pop", 0.0)) for d, (_, rec) in cross.items()}


def fit_warm_copurchase(
    blend: Blend,
    split: InductiveSplit,
    ranker: Any,
    slices: tuple[str, ...],
    units: Mapping[str, float],
    report: dict[str, Any],
) -> None:
    """Per domain, the co-purchase weight of users with history in it ("inductive"): the
    value of ``COPURCHASE_GRID`` x ``units[domain]`` (the spread of their served score)
    with the highest :func:`blend_objective` on the validation ``slices`` (the first is
    the main one) over every validation user, 0 unless one does strictly better. Each
    slice is judged against ``model.blendparts.addon_reference`` of its best single part
    (model, prior, content alone, scored on the same users and item vectors) and the
    blend without the boost. Sets ``blend.weights`` and, in
    ``report[domain]["inductive"]``, the weights and the fit ({"unit", "chosen",
    "reference", "objective", "val_ndcg@20"} under "copurchase").

    Why the lower of the two: the boost adds only to warm items (a cold item has no
    co-purchase). Where the blend already leaves cold items among all below content kNN
    (sparse office), a loss there measured against content kNN is discounted by how far
    below it the slice is, and the boost bought a little ``all`` with a slice that
    misses its floor already (docs/results/quality/2026-12-07-warm-charge). Why not the
    blend without the boost for every slice: that charged losses above the floor too and
    chose no boost where it helped ``all`` (docs/results/ablation/copurchase.md)."""
    saved = {d: dict(ws) for d, ws in blend.weights.items()}

    def scored(weights: Mapping[str, BlendWeights]) -> dict[str, dict[str, float]]:
        for d, w in weights.items():
            blend.weights[d]["inductive"] = w
        # the ranker reads the blend's weights each time it binds
        res = evaluate(ranker, split, ks=(20,), stage="val", only=list(slices))
        return {
            d: {s: float(res[d][s]["ndcg@20"] or 0.0) for s in slices if s in res.get(d, {})}
            for d in weights
        }

    corners = [BlendWeights(1.0, 0.0, 0.0), BlendWeights(0.0, 1.0, 0.0)]
    if blend.reducer is not None:
        corners.append(BlendWeights(0.0, 0.0, 1.0))
    best_part: dict[str, dict[str, float]] = {d: {} for d in units}
    for c in corners:
        for d, v in scored({d: c for d in units}).items():
            for s, x in v.items():
                best_part[d][s] = max(best_part[d].get(s, 0.0), x)
    curves: dict[str, dict[float, dict[str, float]]] = {d: {} for d in units}
    for g in (0.0, *COPURCHASE_GRID):
        trial = {d: replace(saved[d]["inductive"], copurchase=g * u) for d, u in units.items()}
        for d, v in scored(trial).items():
            curves[d][g] = v
    main = slices[0]
    for d, curve in curves.items():
        reference = addon_reference(best_part[d], curve[0.0], main)  # 0.0: no boost
        value = {g: blend_objective(v, reference, main) for g, v in curve.items()}
        # max keeps the first of equals: 0 (no boost) unless a value does strictly better
        best = max(value, key=lambda g: value[g])
        blend.weights[d]["inductive"] = replace(saved[d]["inductive"], copurchase=best * units[d])
        record = report[d].setdefault("inductive", {})
        record["weights"] = blend.weights[d]["inductive"].to_dict()
        record["copurchase"] = {
            "unit": units[d],
            "chosen": best,
            "best_single_part": best_part[d],
            "reference": reference,
            "objective": {f"{g:g}": round(v, 6) for g, v in value.items()},
            "val_ndcg@20": {f"{g:g}": v for g, v in curve.items()},
        }
        log.info(
            "blend %s/inductive+copurchase: %g x the score spread (objective %s, all %s)",
            d,
            best,
            np.round(list(value.values()), 4).tolist(),
            np.round([curve[g].get(main, 0.0) for g in curve], 4).tolist(),
        )
