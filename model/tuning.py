"""Per-dataset choice of the training trade-offs with Optuna, on validation only.

A shop cannot know in advance whether its data wants the content term, the cross-domain
alignment or neither, so ``micrec train`` tries a few configurations and keeps the best
one on the validation split (the test split is never read):

- trial 0 is the configuration as given, trial 1 is INMO (no content, no alignment), so
  the chosen model is never below either on the objective; the remaining trials are drawn
  by Optuna's TPE sampler (seeded) from ``search_space``;
- every trial trains with early stopping; a trial whose intermediate validation NDCG@20
  falls below the median of earlier trials at the same epoch is pruned (MedianPruner);
- the objective of a finished trial is its *served* validation quality: the score blend
  (model.blendfit) is fitted for the trial's model, and the objective is the mean over
  domains and over the slices all / new items / cold items / cross-domain cold users of
  the blended validation NDCG@20. (Each slice counts once, so the trial that serves new
  items and users best is not traded for a small gain on ``all``.)

The budget is a number of trials and a wall-clock limit (``TuneConfig``); every trial's
parameters and per-domain validation NDCG@20 go into the bundle's tuning.json.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from model.blendfit import fit_blend
from model.data.split import InductiveSplit
from model.encoders.base import ItemFeatures
from model.evaluation import evaluate
from model.nn.blend import Blend
from model.nn.config import BlendConfig, MICRecConfig, TrainConfig, TuneConfig
from model.training import Trainer, TrainResult

log = logging.getLogger(__name__)

OBJECTIVE_SLICES = ("all", "new_items", "cold_items", "cd_cold_users")


def search_space(trial: Any, base: MICRecConfig, tc: TrainConfig) -> dict[str, Any]:
    """The trade-offs searched: content on/off with its weight at the start and the
    content-only loss, the cross-domain weight (0 included) and temperature, the lr."""
    content = base.uses_content and trial.suggest_categorical("content", [True, False])
    cd_on = trial.suggest_categorical("cross_domain", [True, False])
    params: dict[str, Any] = {
        "content": content,
        "cross_domain": cd_on,
        "cross_domain_weight": trial.suggest_float("cross_domain_weight", 0.01, 0.5, log=True)
        if cd_on
        else 0.0,
        "temperature": trial.suggest_float("temperature", 0.1, 0.5),
        "lr": trial.suggest_float("lr", tc.lr / 3, tc.lr * 3, log=True),
    }
    if content:
        params["gamma_init"] = trial.suggest_categorical("gamma_init", [0.0, 1.0])
        params["cold_item_weight"] = trial.suggest_float("cold_item_weight", 0.0, 1.0)
    return params


def apply_params(
    mc: MICRecConfig, tc: TrainConfig, params: dict[str, Any]
) -> tuple[MICRecConfig, TrainConfig]:
    """The model and train configs of one trial's parameters."""
    m = {k: v for k, v in params.items() if k in asdict(mc) and k != "content"}
    if not params.get("content", True):
        m["modalities"] = ()
    return replace(mc, **m), replace(tc, lr=params.get("lr", tc.lr))


def _given(mc: MICRecConfig, tc: TrainConfig) -> dict[str, Any]:
    p: dict[str, Any] = {
        "content": mc.uses_content,
        "cross_domain": mc.cross_domain_weight > 0,
        "temperature": mc.temperature,
        "lr": tc.lr,
    }
    if mc.cross_domain_weight > 0:
        p["cross_domain_weight"] = mc.cross_domain_weight
    if mc.uses_content:
        p["gamma_init"] = mc.gamma_init
        p["cold_item_weight"] = mc.cold_item_weight
    return p


def served_validation(
    result: TrainResult,
    split: InductiveSplit,
    features: ItemFeatures | None,
    blend_cfg: BlendConfig,
) -> tuple[float, dict[str, dict[str, float | None]], Blend, dict[str, Any]]:
    """(objective, {domain: {slice: val NDCG@20}}, blend, blend report) of a trained model."""
    from model.rankers import MICRecRanker

    model = result.model
    blend, report = fit_blend(model, split, features, blend_cfg)  # type: ignore[arg-type]
    val = evaluate(
        MICRecRanker("trial", model, split, features, blend=blend),  # type: ignore[arg-type]
        split,
        ks=(20,),
        only=OBJECTIVE_SLICES,
        stage="val",
    )
    per = {d: {s: r[s]["ndcg@20"] for s in OBJECTIVE_SLICES if s in r} for d, r in val.items()}
    vals = [v for r in per.values() for v in r.values() if v is not None]
    return float(np.mean(vals)) if vals else 0.0, per, blend, report


@dataclass
class TuneResult:
    model_config: MICRecConfig
    train_config: TrainConfig
    result: TrainResult
    blend: Blend
    blend_report: dict[str, Any]
    trials: list[dict[str, Any]]
    chosen: int


def tune(
    split: InductiveSplit,
    features: ItemFeatures | None,
    mc: MICRecConfig,
    tc: TrainConfig,
    tune_cfg: TuneConfig,
    blend_cfg: BlendConfig,
    *,
    progress: bool = True,
) -> TuneResult:
    """Search, keep the best trial's trained model, refit its blend with ``blend_cfg``."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=tune_cfg.seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=tc.eval_every),
    )
    study.enqueue_trial(_given(mc, tc))
    if mc.uses_content or mc.cross_domain_weight > 0:
        study.enqueue_trial(
            {"content": False, "cross_domain": False, "temperature": mc.temperature, "lr": tc.lr}
        )
    trial_blend = replace(blend_cfg, trials=tune_cfg.blend_trials)
    records: list[dict[str, Any]] = []
    best: dict[str, Any] = {}
    t_start = time.perf_counter()
    bar = tqdm(total=tune_cfg.trials, desc="tune", unit="trial", disable=not progress)

    def objective(trial: optuna.Trial) -> float:
        params = search_space(trial, mc, tc)
        tmc, ttc = apply_params(mc, tc, params)
        t0 = time.perf_counter()
        trainer = Trainer(split, features, tmc, ttc)

        def report(row: dict[str, Any]) -> None:
            if "val_ndcg@20" in row:
                trial.report(row["val_ndcg@20"], row["epoch"])
                if trial.should_prune():
                    raise optuna.TrialPruned()

        record: dict[str, Any] = {"number": trial.number, "params": params}
        records.append(record)
        try:
            res = trainer.fit(progress=False, on_epoch=report)
        except optuna.TrialPruned:
            record.update(state="pruned", seconds=time.perf_counter() - t0)
            bar.update(1)
            raise
        value, per, _, _ = served_validation(res, split, features, trial_blend)
        record.update(
            state="complete",
            objective=value,
            val_ndcg20=per,
            best_epoch=res.best_epoch,
            seconds=time.perf_counter() - t0,
        )
        if not best or value > best["value"]:
            best.update(
                value=value,
                number=trial.number,
                mc=tmc,
                tc=ttc,
                result=replace(res, model=copy.deepcopy(res.model)),
            )
        bar.update(1)
        bar.set_postfix(best=f"{best['value']:.4f}", last=f"{value:.4f}")
        log.info("tuning trial %d: %s -> %.4f", trial.number, params, value)
        return value

    study.optimize(objective, n_trials=max(1, tune_cfg.trials), timeout=tune_cfg.timeout_s)
    bar.close()
    log.info(
        "tuning: %d trials in %.0f s, chosen trial %d (%.4f)",
        len(records),
        time.perf_counter() - t_start,
        best["number"],
        best["value"],
    )
    blend, breport = fit_blend(best["result"].model, split, features, blend_cfg)
    return TuneResult(
        model_config=best["mc"],
        train_config=best["tc"],
        result=best["result"],
        blend=blend,
        blend_report=breport,
        trials=records,
        chosen=best["number"],
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
