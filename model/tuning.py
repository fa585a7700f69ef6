"""Per-dataset choice of the training trade-offs with Optuna, on validation only.

A shop cannot know in advance whether its data wants the content term, the cross-domain
alignment, the maps trained after the backbone, or none of them, so ``micrec train``
tries configurations and keeps the best one on the validation split (the test split is
never read):

- a designed start (``designed_trials``): the configuration as given, INMO, full MICRec,
  content only, cross-domain alignment only (content trials only where the data has
  content), each with the cross-domain and item maps; then Optuna's TPE sampler, seeded,
  draws from ``search_space`` (``n_startup_trials`` = the designed trials, so every draw
  after them is TPE's, not a random configuration that is the same on every dataset);
- every trial trains with early stopping and is not pruned: the objective below only
  exists for a trained model, and the backbone's own validation NDCG (what a pruner could
  watch) ranks trials differently from the served score;
- the objective of a trial is its *served* validation quality: the cross-domain maps and
  the item map are fitted (model.maps), the score blend (model.blendfit) is fitted and
  chooses the cross-domain rule, and the objective is the mean over domains and over the
  slices all / new items / cold items / cold items among all items / pseudo-cold users of
  the blended validation NDCG@20 (each slice counts once); optionally
  (``[tune] baseline_floor`` > 0) charged for every slice below the best baseline (most
  popular, content kNN) on validation (``search_objective``);
- the budget: at most ``trials`` trials, and no new trial once the search has run
  ``budget_trainings`` times as long as its first trial (``timeout_s`` caps it in
  seconds). tuning.json records every trial's parameters, per-domain validation NDCG@20,
  chosen cross-domain rule and seconds, and the budget.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from model.blendfit import fit_blend, fit_reducer
from model.data.split import InductiveSplit
from model.encoders.base import ItemFeatures
from model.evaluation import PSEUDO_COLD_SLICE, evaluate
from model.maps import Maps, fit_maps
from model.nn.blend import Blend
from model.nn.config import (
    BlendConfig,
    BridgeConfig,
    ItemMapConfig,
    MICRecConfig,
    TrainConfig,
    TuneConfig,
)
from model.training import Trainer, TrainResult

log = logging.getLogger(__name__)

OBJECTIVE_SLICES = ("all", "new_items", "cold_items", "cold_items_vs_all", PSEUDO_COLD_SLICE)


def search_space(
    trial: Any, base: MICRecConfig, tc: TrainConfig, *, has_content: bool
) -> dict[str, Any]:
    """Every trade-off that changed a served number in our measurements: content in the
    graph (on/off, its weight at the start, the content-only loss), the cross-domain
    alignment (0 included) and its temperature, interaction dropout, the lr, and whether
    cold items get the trained item map (model.nn.itemmap). The cross-domain map's use is
    chosen inside every trial by the blend fit (model.blendfit), on the same validation."""
    content = has_content and trial.suggest_categorical("content", [True, False])
    cd_on = trial.suggest_categorical("cross_domain", [True, False])
    params: dict[str, Any] = {
        "content": content,
        "cross_domain": cd_on,
        "cross_domain_weight": trial.suggest_float("cross_domain_weight", 0.01, 0.5, log=True)
        if cd_on
        else 0.0,
        "temperature": trial.suggest_float("temperature", 0.1, 0.5),
        "drop_interaction": trial.suggest_float("drop_interaction", 0.0, 0.3),
        "lr": trial.suggest_float("lr", tc.lr / 3, tc.lr * 3, log=True),
    }
    if content:
        params["gamma_init"] = trial.suggest_float("gamma_init", 0.0, 2.0)
        params["cold_item_weight"] = trial.suggest_float("cold_item_weight", 0.0, 1.0)
    if has_content:
        params["item_map"] = trial.suggest_categorical("item_map", [True, False])
    return params


def apply_params(
    mc: MICRecConfig, tc: TrainConfig, params: dict[str, Any]
) -> tuple[MICRecConfig, TrainConfig]:
    """The model and train configs of one trial's parameters."""
    m = {k: v for k, v in params.items() if k in asdict(mc) and k != "content"}
    if not params.get("content", True):
        m["modalities"] = ()
    return replace(mc, **m), replace(tc, lr=params.get("lr", tc.lr))


def designed_trials(
    mc: MICRecConfig, tc: TrainConfig, *, has_content: bool
) -> list[dict[str, Any]]:
    """The first trials, before TPE: the configuration as given, INMO, full MICRec
    (content and alignment), content only, cross-domain alignment only; each once (a
    dataset without content features has no content trials). Every one gets the
    cross-domain map and, with content, the item map; the TPE trials may turn them off."""
    cd_weight = mc.cross_domain_weight if mc.cross_domain_weight > 0 else 0.1
    shared = {
        "temperature": mc.temperature,
        "drop_interaction": mc.drop_interaction,
        "lr": tc.lr,
    }
    content = {
        "content": True,
        "gamma_init": mc.gamma_init,
        "cold_item_weight": mc.cold_item_weight,
    }
    no_content = {"content": False}
    cd = {"cross_domain": True, "cross_domain_weight": cd_weight}
    no_cd = {"cross_domain": False, "cross_domain_weight": 0.0}
    given_content = content if (mc.uses_content and has_content) else no_content
    given_cd = (
        {"cross_domain": True, "cross_domain_weight": mc.cross_domain_weight}
        if mc.cross_domain_weight > 0
        else no_cd
    )
    out = [
        {**given_content, **given_cd, **shared},  # given
        {**no_content, **no_cd, **shared},  # INMO
    ]
    if has_content:
        out += [{**content, **cd, **shared}, {**content, **no_cd, **shared}]  # full, content only
    out.append({**no_content, **cd, **shared})  # cross-domain only
    if has_content:
        out = [{**p, "item_map": True} for p in out]
    unique: list[dict[str, Any]] = []
    for p in out:
        if p not in unique:
            unique.append(p)
    return unique


def served_validation(
    result: TrainResult,
    split: InductiveSplit,
    features: ItemFeatures | None,
    blend_cfg: BlendConfig,
    bridge_cfg: BridgeConfig | None = None,
    item_map_cfg: ItemMapConfig | None = None,
    *,
    use_item_map: bool = True,
    floors: dict[str, dict[str, float]] | None = None,
    floor: float = 0.0,
) -> tuple[float, dict[str, dict[str, float | None]], Blend, dict[str, Any]]:
    """(objective, {domain: {slice: val NDCG@20}}, blend, blend report) of a trained model
    served as ``micrec train`` serves it (cross-domain and item maps, then the blend);
    the objective is ``search_objective`` against ``floors`` at ``floor`` (as ``[tune]
    baseline_floor``, off by default: the plain mean)."""
    from model.rankers import MICRecRanker

    model = result.model
    reducer = fit_reducer(split, features, blend_cfg.content_dim)
    maps = fit_maps(model, split, features, bridge_cfg, item_map_cfg, reducer)  # type: ignore[arg-type]
    if not use_item_map:
        maps.item_maps = None
    blend, report = fit_blend(
        model,  # type: ignore[arg-type]
        split,
        features,
        blend_cfg,
        bridges=maps.bridges,
        item_maps=maps.item_maps,
        reducer=reducer,
    )
    val = evaluate(
        MICRecRanker(
            "trial",
            model,  # type: ignore[arg-type]
            split,
            features,
            blend=blend,
            bridges=maps.bridges,
            item_maps=maps.item_maps,
        ),
        split,
        ks=(20,),
        only=OBJECTIVE_SLICES,
        stage="val",
    )
    per = {d: {s: r[s]["ndcg@20"] for s in OBJECTIVE_SLICES if s in r} for d, r in val.items()}
    return search_objective(per, floors or {}, floor), per, blend, report


def baseline_floors(
    split: InductiveSplit, features: ItemFeatures | None
) -> dict[str, dict[str, float]]:
    """{domain: {objective slice: the best validation NDCG@20 of most popular and content
    kNN}}: what a shop has without any model (content kNN only where the data has text).
    The search's objective charges a trial for every slice below it (``search_objective``)."""
    from model.rankers import ContentKNNRanker, PopularRanker

    rankers: list[Any] = [PopularRanker(split)]
    if features is not None and "text" in features.modalities:
        rankers.append(ContentKNNRanker(split, features))
    floors: dict[str, dict[str, float]] = {}
    for ranker in rankers:
        val = evaluate(ranker, split, ks=(20,), only=OBJECTIVE_SLICES, stage="val")
        for d, rows in val.items():
            for s, row in rows.items():
                v = row.get("ndcg@20")
                if v is not None:
                    floors.setdefault(d, {})[s] = max(floors.get(d, {}).get(s, 0.0), v)
    return floors


def search_objective(
    per: dict[str, dict[str, float | None]],
    floors: dict[str, dict[str, float]],
    floor: float = 1.0,
) -> float:
    """A trial's served validation score: the mean NDCG@20 over domains and objective
    slices (each slice once), times 1 - the summed relative shortfalls of the slices
    below ``floor`` x their best baseline (``baseline_floors``), never below 0.

    Why the charge: a plain mean lets a trial that gains a little on the slices with large
    NDCG (new items) buy a loss on one with small NDCG (users new to a domain), down to
    most popular. ``floor`` 0 (the default of ``[tune] baseline_floor``): the plain mean;
    the charge was measured not to pay on test (docs/results/quality.md, session 9)."""
    vals = [v for r in per.values() for v in r.values() if v is not None]
    if not vals:
        return 0.0
    shortfall = sum(
        max(0.0, 1.0 - v / (floor * ref))
        for d, r in per.items()
        for s, v in r.items()
        if v is not None and floor > 0 and (ref := floors.get(d, {}).get(s, 0.0)) > 0
    )
    return float(np.mean(vals)) * max(0.0, 1.0 - shortfall)


@dataclass
class TuneResult:
    model_config: MICRecConfig
    train_config: TrainConfig
    result: TrainResult
    blend: Blend
    blend_report: dict[str, Any]
    trials: list[dict[str, Any]]
    chosen: int
    maps: Maps
    budget: dict[str, Any] = field(default_factory=dict)
    """Seconds of the first training, the budget derived from it, the time spent."""
    floors: dict[str, dict[str, float]] = field(default_factory=dict)
    """The baselines' validation NDCG@20 per domain and slice the objective charged
    against (``baseline_floors``; empty with ``baseline_floor = 0``)."""


def tune(
    split: InductiveSplit,
    features: ItemFeatures | None,
    mc: MICRecConfig,
    tc: TrainConfig,
    tune_cfg: TuneConfig,
    blend_cfg: BlendConfig,
    *,
    bridge_cfg: BridgeConfig | None = None,
    item_map_cfg: ItemMapConfig | None = None,
    progress: bool = True,
) -> TuneResult:
    """Search, keep the best trial's trained model, refit its blend with ``blend_cfg``."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    has_content = features is not None and bool(features.modalities)
    designed = designed_trials(mc, tc, has_content=has_content)
    # TPE starts right after the designed trials (its random start-up trials would be the
    # same configurations on every dataset for one seed); no pruning: what the search
    # maximises (the served validation score, maps and blend included) only exists once
    # a trial is trained, and the backbone's own validation NDCG ranks trials differently
    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=tune_cfg.seed, n_startup_trials=len(designed)),
        pruner=optuna.pruners.NopPruner(),
    )
    for p in designed[: max(1, tune_cfg.trials)]:
        study.enqueue_trial(p)
    # without the co-purchase boost: its weight is fitted on every pseudo-cold user (a few
    # full evaluations), it changes only users new to a domain and only after the map, so
    # it is fitted once, on the chosen trial's refit below, not in every trial. Without
    # the users' other-domain profile mix too: a serving-side addition on the user side
    # that stands in for content in the graph, so inside the trials it lifts the trials
    # without content or alignment most and steers the search to them (what the alignment
    # gives users new to a domain is then lost); it is fitted on the refit, as the boost
    trial_blend = replace(
        blend_cfg, trials=tune_cfg.blend_trials, copurchase=False, profile_other=(0.0,)
    )
    floors = baseline_floors(split, features) if tune_cfg.baseline_floor > 0 else {}
    records: list[dict[str, Any]] = []
    best: dict[str, Any] = {}
    t_start = time.perf_counter()
    budget: dict[str, float] = {}
    bar = tqdm(total=tune_cfg.trials, desc="tune", unit="trial", disable=not progress)

    def objective(trial: optuna.Trial) -> float:
        params = search_space(trial, mc, tc, has_content=has_content)
        tmc, ttc = apply_params(mc, tc, params)
        t0 = time.perf_counter()
        record: dict[str, Any] = {"number": trial.number, "params": params}
        records.append(record)
        res = Trainer(split, features, tmc, ttc).fit(progress=False)
        value, per, _, _ = served_validation(
            res,
            split,
            features,
            trial_blend,
            bridge_cfg,
            item_map_cfg,
            use_item_map=params.get("item_map", True),
            floors=floors,
            floor=tune_cfg.baseline_floor,
        )
        record.update(
            state="complete",
            objective=value,
            val_ndcg20=per,
            best_epoch=res.best_epoch,
            cross_domain_rule=getattr(res.model, "config", tmc).cross_domain_rule,
            seconds=time.perf_counter() - t0,
        )
        if not budget:  # the search's budget is a multiple of its first training
            budget["first_s"] = record["seconds"]
            budget["budget_s"] = min(
                tune_cfg.timeout_s, tune_cfg.budget_trainings * record["seconds"]
            )
        if not best or value > best["value"]:
            best.update(
                value=value,
                number=trial.number,
                mc=replace(tmc, cross_domain_rule=record["cross_domain_rule"]),
                tc=ttc,
                item_map=params.get("item_map", True),
                result=replace(res, model=copy.deepcopy(res.model)),
            )
        bar.update(1)
        bar.set_postfix(best=f"{best['value']:.4f}", last=f"{value:.4f}")
        log.info("tuning trial %d: %s -> %.4f", trial.number, params, value)
        if time.perf_counter() - t_start > budget["budget_s"]:
            trial.study.stop()
        return value

    study.optimize(objective, n_trials=max(1, tune_cfg.trials), timeout=tune_cfg.timeout_s)
    bar.close()
    elapsed = time.perf_counter() - t_start
    log.info(
        "tuning: %d trials in %.0f s (%.1f x the first training), chosen trial %d (%.4f)",
        len(records),
        elapsed,
        elapsed / max(budget.get("first_s", 1.0), 1e-9),
        best["number"],
        best["value"],
    )
    reducer = fit_reducer(split, features, blend_cfg.content_dim)
    maps = fit_maps(best["result"].model, split, features, bridge_cfg, item_map_cfg, reducer)
    if not best["item_map"]:
        maps.item_maps = None
    blend, breport = fit_blend(
        best["result"].model,
        split,
        features,
        blend_cfg,
        bridges=maps.bridges,
        item_maps=maps.item_maps,
        low_degree_grid=(item_map_cfg or ItemMapConfig()).low_degree_k,
        reducer=reducer,
    )
    return TuneResult(
        model_config=best["mc"],
        train_config=best["tc"],
        result=best["result"],
        blend=blend,
        blend_report=breport,
        trials=records,
        chosen=best["number"],
        maps=maps,
        budget={
            "first_training_s": budget.get("first_s"),
            "budget_s": budget.get("budget_s"),
            "elapsed_s": elapsed,
            "multiple_of_first": elapsed / max(budget.get("first_s", 1.0), 1e-9),
        },
        floors=floors,
    )


def plot_trials(trials: list[dict[str, Any]], chosen: int, path: Path) -> Path:
    """Objective per trial (pruned trials marked), the chosen one highlighted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for t in trials:
        y = t.get("objective")
        if y is None or not math.isfinite(y):
            ax.scatter([t["number"]], [0], marker="x", color="grey")
            continue
        ax.scatter(
            [t["number"]],
            [100 * y],
            color="tab:red" if t["number"] == chosen else "tab:blue",
            s=50 if t["number"] == chosen else 25,
        )
        label = "given" if t["number"] == 0 else ("INMO" if t["number"] == 1 else "")
        if label:
            ax.annotate(label, (t["number"], 100 * y), textcoords="offset points", xytext=(4, 4))
    ax.set_xlabel("trial (x = pruned)")
    ax.set_ylabel("served validation NDCG@20 (%)")
    ax.set_title("tuning trials (red: chosen)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
