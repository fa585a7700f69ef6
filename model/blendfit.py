"""Fitting the served score blend (model.nn.blend) on the validation split.

Per domain and user type, Optuna's TPE sampler (seeded) searches the weights of the three
parts (model, prior, content) on validation interactions only; the test split is never
read. With r_s = NDCG@20(blend) / max over the single parts (model only, prior only,
content only) of NDCG@20 on validation slice s, the objective is

    r_main - sum over the other slices s of max(0, 1 - r_s)

among the weights that keep the main slice (``all``; the cross-domain cold users for that
type) within ``main_tolerance`` of the model score alone; weights outside score
r_main - 10. So the blend first keeps what the model does for most requests, then makes
every other slice as good as its best single part as far as it can. Two objectives were
tried first and are not used: a plain mean of the r_s (slices where every part is near 0,
items with 1-5 interactions, gave ratios of 10-20 and the fit gave up most of ``all``),
and the objective above without the constraint (on amazon-arts-office it gave up about
12 % of ``all`` for the small slices; docs/results/quality.md). The three corners are
enqueued as the first trials. Slices per type (``VAL_SLICES``): users with history in the
domain are judged on all / new items / cold items / items with 1-5 and 6-20 training
interactions, cross-domain cold users on their own slice; users with history are fitted
again with their other-domain content profile mixed in at each ``profile_other`` weight
(kept only if the objective rises); with ``copurchase`` on, each
type's choice is then tried with the co-purchase boost at a few weights
(model.copurchasefit).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from model.blendparts import SliceParts, blend_objective, slice_parts
from model.copurchasefit import chosen_pop, fit_copurchase_for_rule, fit_warm_copurchase
from model.data.split import InductiveSplit
from model.encoders.base import ItemFeatures
from model.evaluation import (
    PSEUDO_COLD_SLICE,
)
from model.nn.blend import ITEM_TERMS, Blend, BlendWeights, ContentReducer
from model.nn.bridge import Bridges
from model.nn.config import BlendConfig
from model.nn.copurchase import CoPurchase
from model.nn.itemmap import ItemMaps
from model.nn.micrec import MICRec
from model.rulechoice import choose_rule, pseudo_cold_per_user
from model.training import domain_features

log = logging.getLogger(__name__)

VAL_SLICES: dict[str, tuple[str, ...]] = {
    "inductive": ("all", "new_items", "cold_items", "cold_items_vs_all", "deg_1-5", "deg_6-20"),
    "cross_domain": (PSEUDO_COLD_SLICE,),
}
"""Validation slices per user type; cross-domain cold users are judged on the pseudo-cold
users (hundreds to thousands per domain) rather than the few real ones of validation."""
CORNERS = (
    {"model": 1.0, "prior": 0.0, "content": 0.0},
    {"model": 0.0, "prior": 1.0, "content": 0.0},
    {"model": 0.0, "prior": 0.0, "content": 1.0},
)


def fit_reducer(
    split: InductiveSplit, features: ItemFeatures | None, dim: int
) -> ContentReducer | None:
    """The content PCA over the split's training (old) items: held-out new items, which
    stand in for items registered after training, are not part of the fit."""
    if features is None or dim <= 0 or not features.modalities:
        return None
    ids = [i for ds in split.domains.values() for i in ds.item_ids[: ds.n_old_items]]
    feats, masks = domain_features(features, ids, tuple(features.modalities))
    return ContentReducer.fit(feats, masks, dim) if feats else None


def _weights_of(parts: list[SliceParts]) -> Callable[[dict[str, float]], BlendWeights]:
    """Parameters in units of each part's spread on ``parts[0]`` -> blend weights."""
    sm, sp, sc = parts[0].spreads()
    return lambda p: BlendWeights(p["model"] / sm, p["prior"] / sp, p.get("content", 0.0) / sc)


def _judge(
    parts: list[SliceParts],
    p: dict[str, float],
    reference: tuple[list[float], float],
    cfg: BlendConfig,
    weights: Callable[[dict[str, float]], BlendWeights] | None = None,
) -> tuple[float, dict[str, float]]:
    """(objective, validation NDCG@20 per slice) of the parameters ``p`` (with any item
    terms in it applied) against ``reference`` = (best single part per slice, the model
    alone's NDCG@20 on the main slice): ``blend_objective``, or r_main - 10 where the main
    slice loses more than ``cfg.main_tolerance`` of the model alone's."""
    w = (weights or _weights_of(parts))(p)
    judged = [pt.with_terms(p) for pt in parts] if any(t in p for t in ITEM_TERMS) else parts
    ndcg = {pt.name: pt.ndcg(w) for pt in judged}
    best_of = dict(zip(ndcg, reference[0], strict=True))
    main = parts[0].name
    if ndcg[main] < (1.0 - cfg.main_tolerance) * reference[1]:
        return blend_objective({main: ndcg[main]}, best_of, main) - 10.0, ndcg
    return blend_objective(ndcg, best_of, main), ndcg


def _fit_type(
    parts: list[SliceParts],
    has_content: bool,
    cfg: BlendConfig,
    label: str,
    reference: tuple[list[float], float] | None = None,
    terms: Sequence[str] = (),
    start: Sequence[dict[str, float]] = (),
    n_trials: int | None = None,
    fixed: dict[str, float] | None = None,
) -> tuple[BlendWeights, list[dict[str, Any]]]:
    """Optuna search of one (domain, user type); returns the weights and every trial (the
    last record, ``{"chosen": params, "main_ndcg": ..., "objective": ...}``, names the
    parameters the weights come from, their validation NDCG@20 on the main slice and
    their objective). ``reference`` = (best single part per slice, model-only NDCG@20 of
    the main slice) to judge against instead of this fit's own, so fits of different item
    vectors (the low-degree mix) have comparable objectives. ``terms``: item terms
    (model.nn.blend.ITEM_TERMS) searched too (the corners have them at 0, so the blend
    without them is one of the trials). ``start``: parameters tried after the corners;
    ``n_trials``: the trials in all (default ``cfg.trials``); ``fixed``: item terms held at
    these values in every trial (recorded with each trial's parameters)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    weights = _weights_of(parts)
    corner_ndcg = [
        [pt.ndcg(weights(c)) for c in CORNERS if has_content or c["content"] == 0] for pt in parts
    ]
    best_part = [max(v) for v in corner_ndcg] if reference is None else reference[0]
    # the main slice may lose at most main_tolerance of what the model alone scores there
    model_main = corner_ndcg[0][0] if reference is None else reference[1]
    trials: list[dict[str, Any]] = []

    def objective(trial: optuna.Trial) -> float:
        p = {
            "model": trial.suggest_float("model", 0.0, 1.0),
            "prior": trial.suggest_float("prior", -1.0, 1.0),
        }
        if has_content:
            p["content"] = trial.suggest_float("content", 0.0, 1.0)
        for t in terms:
            p[t] = trial.suggest_float(t, *ITEM_TERMS[t])
        p.update(fixed or {})
        value, ndcg = _judge(parts, p, (best_part, model_main), cfg, weights)
        trials.append({"params": p, "val_ndcg@20": ndcg, "objective": value})
        return value

    study = optuna.create_study(
        direction="maximize", sampler=optuna.samplers.TPESampler(seed=cfg.seed)
    )
    for c in CORNERS:
        if has_content or c["content"] == 0:
            corner = dict(c) if has_content else {k: c[k] for k in ("model", "prior")}
            corner.update({t: 0.0 for t in terms})
            study.enqueue_trial(corner)
    for params in start:
        study.enqueue_trial(dict(params))
    study.optimize(objective, n_trials=max(n_trials or cfg.trials, len(CORNERS) + len(start)))
    best = study.best_trial
    params = {**best.params, **(fixed or {})}
    if len(parts) == 1 and not terms and not fixed:
        params = _one_standard_error(parts[0], params, trials[: len(corner_ndcg[0])], weights)
    log.info(
        "blend %s: objective %.3f with %s (best single part per slice %s)",
        label,
        best.value,
        {k: round(v, 3) for k, v in params.items()},
        {pt.name: round(b, 4) for pt, b in zip(parts, best_part, strict=True)},
    )
    main = parts[0].with_terms(params) if terms or fixed else parts[0]
    trials.append(
        {
            "chosen": params,
            "main_ndcg": main.ndcg(weights(params)),
            "objective": best.value,
            "reference": [best_part, model_main],
        }
    )
    return weights(params), trials


def _fit_inductive(
    chosen: list[SliceParts],
    cfg: BlendConfig,
    label: str,
    grid: Sequence[float],
) -> tuple[BlendWeights, list[dict[str, Any]], float, dict[str, float]]:
    """The inductive type's blend for each low-degree mix pseudo-count k of ``grid`` (0 =
    no mix, always tried first); returns the weights, trials, chosen k and every k's
    objective. Every k is judged against k = 0's single parts, and a k > 0 is kept only
    if its objective is higher: rarely bought items take part of their item-map vector
    only where validation says it helps."""
    has_content = chosen[0].pu is not None
    w, trials = _fit_with_terms(chosen, has_content, cfg, label)
    best_k, best_obj = 0.0, float(trials[-1]["objective"])
    scores = {"0": best_obj}
    if chosen[0].items_at is None:
        return w, trials, best_k, scores
    ref = trials[-1]["reference"]
    for k in sorted(set(grid) - {0.0}):
        parts_k = [replace(pt, zi=pt.items_at(k)) for pt in chosen]  # type: ignore[misc]
        wk, tk = _fit_with_terms(parts_k, has_content, cfg, f"{label} k={k:g}", (ref[0], ref[1]))
        scores[f"{k:g}"] = float(tk[-1]["objective"])
        if scores[f"{k:g}"] > best_obj:
            w, trials, best_k, best_obj = wk, tk, k, scores[f"{k:g}"]
    return w, trials, best_k, scores


def _fit_profile_other(
    chosen: list[SliceParts],
    cfg: BlendConfig,
    label: str,
    fitted: tuple[BlendWeights, list[dict[str, Any]]],
) -> tuple[BlendWeights, list[dict[str, Any]], float, dict[str, float]]:
    """The weight of the users' other-domain content profile (``cfg.profile_other``;
    model.nn.blend.DomainBlend.mix_profiles) for the inductive type, after ``fitted`` (the
    weights and trials without it, on ``chosen``); returns the weights, trials, chosen
    weight and each weight's objective.

    The item side stays as ``fitted`` chose it (one item vector serves every user type,
    so a profile weight must not move what users new to the domain are ranked against);
    only the three weights are searched again. Each profile weight, 0 included, gets the
    same search: from ``fitted``'s parameters, ``cfg.trials`` trials, against ``fitted``'s
    references; the highest objective wins, 0 on ties, and when 0 wins the blend stays
    as ``fitted`` chose it (its search only measured what more trials alone give). Why
    the same search for 0 too: separate searches differ by TPE's luck, and a weight
    judged at the parameters fitted without it loses to slices those parameters were not
    chosen for (docs/results/ablation/profile-other.md)."""
    w, trials = fitted
    grid = sorted(set(cfg.profile_other) | {0.0})
    if chosen[0].pu_other is None or len(grid) == 1:
        return w, trials, 0.0, {"0": float(trials[-1]["objective"])}
    ref = trials[-1]["reference"]
    params = dict(trials[-1]["chosen"])
    fixed = {t: params.pop(t) for t in ITEM_TERMS if t in params}
    scores: dict[str, float] = {}
    best: tuple[BlendWeights, list[dict[str, Any]], float] | None = None
    for a in grid:
        wa, ta = _fit_type(
            [pt.with_profile_other(a) for pt in chosen],
            True,
            cfg,
            f"{label} profile_other={a:g}",
            (ref[0], ref[1]),
            start=[params],
            n_trials=cfg.trials,
            fixed=fixed,
        )
        scores[f"{a:g}"] = float(ta[-1]["objective"])
        if best is None or scores[f"{a:g}"] > best[1][-1]["objective"]:
            best = (wa, ta, a)
    assert best is not None
    log.info("blend %s: objective by other-domain profile weight %s", label, scores)
    if best[2] == 0.0:  # no mix: the blend as fitted (0's search was the yardstick only)
        return w, trials, 0.0, scores
    return best[0], best[1], best[2], scores


def _fit_with_terms(
    parts: list[SliceParts],
    has_content: bool,
    cfg: BlendConfig,
    label: str,
    reference: tuple[list[float], float] | None = None,
) -> tuple[BlendWeights, list[dict[str, Any]]]:
    """``_fit_type``, then (with item terms configured: ``cfg.cold_prior``,
    ``cfg.content_decay``) the same fit with the terms searched too, started from the first
    fit's choice with every term at 0; the second is kept only if its objective is higher.

    Why start there: searched from scratch, one more parameter left TPE's 30 trials short
    of the three-parameter optimum (amazon-arts-office, seed 0: objective 0.70 vs 0.95),
    so the extra freedom made the fit worse instead of never worse. Why the designed
    starts (``_term_starts``) and twice the trials: from that one start TPE found no
    decay that helps, where a grid over the decay found a validation objective of 1.07
    vs 1.02 without it (docs/results/ablation/item-terms.md)."""
    w, trials = _fit_type(parts, has_content, cfg, label, reference)
    terms = [t for t in ITEM_TERMS if getattr(cfg, t)]
    if not bool((parts[0].degree == 0).any()):
        terms = [t for t in terms if t != "cold_prior"]  # no item it would apply to
    if parts[0].ci is None:
        terms = [t for t in terms if t != "content_decay"]
    if not terms:
        return w, trials
    ref = trials[-1]["reference"]
    wt, tt = _fit_type(
        parts,
        has_content,
        cfg,
        f"{label} {'+'.join(terms)}",
        (ref[0], ref[1]),
        terms,
        _term_starts(trials[-1]["chosen"], terms),
        2 * cfg.trials,
    )
    return (wt, tt) if tt[-1]["objective"] > trials[-1]["objective"] else (w, trials)


def _term_starts(chosen: dict[str, float], terms: Sequence[str]) -> list[dict[str, float]]:
    """The plain fit's choice with every term at 0, then a small grid per term (the others
    at 0): a few term values x the chosen prior weight, 0 and a small positive one x the
    chosen model weight and 0.6 of it. A term moves the other weights' optimum (a content
    decay lowers the content of popular items, which the prior then lifts back, and the
    content part can weigh more against the model's), further than TPE walks from one
    start in the trials it has."""
    base = {**chosen, **dict.fromkeys(terms, 0.0)}
    values = {"cold_prior": (0.25, 0.5), "content_decay": (0.1, 0.2, 0.35)}
    out = [base]
    for t in terms:
        for v in values[t]:
            for prior in dict.fromkeys((chosen["prior"], 0.0, 0.15)):
                for model in dict.fromkeys((chosen["model"], 0.6 * chosen["model"])):
                    out.append({**base, t: v, "prior": prior, "model": model})
    return out


def _one_standard_error(
    part: SliceParts,
    best: dict[str, float],
    corners: list[dict[str, Any]],
    weights: Any,
) -> dict[str, float]:
    """The best single part instead of ``best`` unless ``best`` beats it by more than one
    standard error of the paired per-user difference (the one-standard-error rule).

    Why: a one-slice fit on a few dozen validation users (cross-domain cold users of a
    small dataset) otherwise picks weights that fit its noise; on amazon-food-kitchen
    (about 20 such users per domain) the fitted prior weight of that type ranged from
    -5.3 to +5.9 across seeds.
    """
    corner = max(corners, key=lambda t: t["objective"])["params"]
    diff = part.per_user_ndcg(weights(best)) - part.per_user_ndcg(weights(corner))
    if len(diff) < 2:
        return dict(corner)
    se = float(diff.std(ddof=1) / np.sqrt(len(diff)))
    return best if float(diff.mean()) > se else dict(corner)


def fit_blend(
    model: MICRec,
    split: InductiveSplit,
    features: ItemFeatures | None,
    cfg: BlendConfig | None = None,
    *,
    calibrate_cold: bool = True,
    bridges: Bridges | None = None,
    item_maps: ItemMaps | None = None,
    low_degree_grid: Sequence[float] = (0.0,),
    reducer: ContentReducer | None = None,
) -> tuple[Blend, dict[str, Any]]:
    """The blend of ``model`` fitted on ``split``'s validation interactions.

    ``reducer``: the content PCA when the caller already fitted it (``fit_reducer``, as
    the cross-domain maps that read content use the same one); None fits it here.

    With ``item_maps`` and a ``low_degree_grid`` beyond 0, the low-degree mix's
    pseudo-count is chosen per domain with the inductive type's blend (``_fit_inductive``)
    and written to ``item_maps.low_degree_k``, so the bundle records it.

    With ``bridges``, the rule that serves users new to a domain is chosen too: the
    model's configured rule or "bridge", whichever gives the pseudo-cold validation users
    the higher blended NDCG@20 (mean over domains). The choice is written to
    ``model.config.cross_domain_rule``, so the bundle records it.

    Returns the blend and a report {domain: {user type: {"weights", "trials"}}}; the
    cross-domain record adds the chosen "rule" and every rule's "rules_val_ndcg@20".
    """
    from model.rankers import MICRecRanker

    cfg = cfg or BlendConfig()
    if item_maps is not None:
        item_maps.low_degree_k.clear()  # this fit chooses it (k = 0 while it does)
    if reducer is None:
        reducer = fit_reducer(split, features, cfg.content_dim)
    blend = Blend(reducer, {})
    if cfg.copurchase:  # the rankers fit its transitions on each graph they bind
        blend.copurchase = CoPurchase(top=cfg.copurchase_top, max_items=cfg.copurchase_max_items)
    rules = [model.config.cross_domain_rule]
    if bridges is not None and "bridge" not in rules:
        rules.append("bridge")
    rankers = {
        rule: MICRecRanker(
            "blend-fit",
            model,
            split,
            features,
            calibrate_cold=calibrate_cold,
            blend=blend,
            bridges=bridges,
            cross_domain_rule=rule,
            item_maps=item_maps,
        )
        for rule in rules
    }
    report: dict[str, Any] = {}
    weights: dict[str, dict[str, BlendWeights]] = {}
    cross: dict[str, dict[str, tuple[BlendWeights, dict[str, Any]]]] = {r: {} for r in rules}
    terms: dict[str, dict[str, float]] = {}
    units: dict[str, dict[str, float]] = {}  # rule -> domain -> spread of the served score
    warm_units: dict[str, float] = {}  # domain -> that of users with history in it
    for domain in model.domains:
        weights[domain] = {"none": BlendWeights(0.0, 1.0, 0.0)}
        report[domain] = {}
        parts = slice_parts(rankers[rules[0]], split, domain, cfg, set(VAL_SLICES["inductive"]))
        chosen = [parts[n] for n in VAL_SLICES["inductive"] if n in parts]
        if chosen:
            label = f"{domain}/inductive"
            w, trials, k, by_k = _fit_inductive(chosen, cfg, label, low_degree_grid)
            # the item side is settled here (mix, terms); the profile weight is user side
            terms[domain] = {t: float(trials[-1]["chosen"].get(t, 0.0)) for t in ITEM_TERMS}
            if k:
                chosen = [replace(pt, zi=pt.items_at(k)) for pt in chosen]  # type: ignore[misc]
            w, trials, a, by_a = _fit_profile_other(chosen, cfg, label, (w, trials))
            chosen = [pt.with_profile_other(a) for pt in chosen]
            if a:
                blend.profile_other[domain] = a
            weights[domain]["inductive"] = w
            report[domain]["inductive"] = {
                "weights": w.to_dict(),
                "trials": trials,
                "low_degree_k": k,
                "objective_by_low_degree_k": by_k,
                "item_terms": terms[domain],
                "profile_other": a,
                "objective_by_profile_other": by_a,
            }
            if item_maps is not None:
                item_maps.low_degree_k[domain] = k
            if blend.copurchase is not None and cfg.copurchase_warm:
                warm_units[domain] = chosen[0].with_terms(terms[domain]).score_spread(w)
        for rule in rules:
            cd = slice_parts(rankers[rule], split, domain, cfg, set(VAL_SLICES["cross_domain"]))
            if PSEUDO_COLD_SLICE not in cd:
                continue
            # one item vector serves every user type: its terms are the inductive fit's
            part = cd[PSEUDO_COLD_SLICE].with_terms(terms.get(domain, {}))
            w, trials = _fit_type([part], part.pu is not None, cfg, f"{domain}/{rule}")
            cross[rule][domain] = (w, {"weights": w.to_dict(), "rule": rule, "trials": trials})
            if blend.copurchase is not None:  # its weight: in units of this spread
                units.setdefault(rule, {})[domain] = part.score_spread(w)
    fitted = {d: {t: v for t, v in ts.items() if v} for d, ts in terms.items()}
    blend.item_terms = {d: ts for d, ts in fitted.items() if ts}  # a term at 0 is no term
    for rule, by_domain in units.items():
        fit_copurchase_for_rule(
            blend, split, rankers[rule], cross[rule], by_domain, cfg.copurchase_pop
        )
    score = {
        r: float(np.mean([t[1]["trials"][-1]["main_ndcg"] for t in by_d.values()]))
        for r, by_d in cross.items()
        if by_d
    }
    best, why = (
        choose_rule(
            score,
            lambda r: pseudo_cold_per_user(blend, split, rankers[r], cross[r]),
            one_se=cfg.rule_one_se,
        )
        if score
        else (rules[0], {})
    )
    for domain, (w, rec) in cross.get(best, {}).items():
        weights[domain]["cross_domain"] = w
        rec["rules_val_ndcg@20"] = {
            r: by_d[domain][1]["trials"][-1]["main_ndcg"]
            for r, by_d in cross.items()
            if domain in by_d
        }
        rec["rule_choice"] = why
        report[domain]["cross_domain"] = rec
    if best != model.config.cross_domain_rule:
        model.config = replace(model.config, cross_domain_rule=best)
    log.info(
        "cross-domain rule %s (pseudo-cold validation NDCG@20 per rule %s; %s)", best, score, why
    )
    blend.weights = weights
    if blend.copurchase is not None:  # the chosen rule's transitions serve every type
        blend.copurchase.pop = chosen_pop(cross.get(best, {}))
    if warm_units:  # users with history in the domain: their boost, on their own slices
        fit_warm_copurchase(
            blend, split, rankers[best], VAL_SLICES["inductive"], warm_units, report
        )
    return blend, report
