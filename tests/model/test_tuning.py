"""Per-dataset tuning (model.tuning) through ``train_run``: the search contains the given
config and INMO, the best validation trial is served, every trial is recorded."""

from __future__ import annotations

import json

import pytest
import torch

from model.bundle import load_bundle
from model.data.synth import SynthConfig, write_synthetic_catalogue
from model.pipeline import train_run
from model.runconfig import load_run_config
from tests.model.toy import toy_split


@pytest.fixture(scope="module")
def tuned(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("tune")
    write_synthetic_catalogue(root / "data", SynthConfig.tiny(images=False, users=300))
    cfg = load_run_config(
        None,
        {
            "features": {"image": "none", "cache_dir": str(root / "cache")},
            "train": {"epochs": 6, "patience": 100, "batch_size": 512, "lr": 0.005},
            "tune": {"trials": 3, "blend_trials": 5, "baseline_floor": 1.0},
            "blend": {"trials": 8, "max_users": 200},
        },
    )
    out = train_run(root / "data", cfg, root / "bundle", progress=False, run_test=False)
    return out.bundle_dir


def test_trials_start_with_the_given_config_and_inmo(tuned) -> None:  # type: ignore[no-untyped-def]
    trials = json.loads((tuned / "tuning.json").read_text())["trials"]
    assert len(trials) == 3
    given, inmo = trials[0]["params"], trials[1]["params"]
    assert given["content"] is True and given["cross_domain"] is True
    assert given["cold_item_weight"] == 0.0 and given["gamma_init"] == 1.0
    assert inmo["content"] is False and inmo["cross_domain_weight"] == 0.0
    assert all(t["state"] in ("complete", "pruned") for t in trials)


def test_the_served_model_is_the_best_validation_trial(tuned) -> None:  # type: ignore[no-untyped-def]
    tuning = json.loads((tuned / "tuning.json").read_text())
    done = [t for t in tuning["trials"] if t["state"] == "complete"]
    best = max(done, key=lambda t: t["objective"])
    assert tuning["chosen"] == best["number"]
    bundle = load_bundle(tuned)
    chosen = best["params"]
    assert bool(bundle.model.modalities) == chosen["content"]
    assert bundle.model.config.cross_domain_weight == chosen["cross_domain_weight"]
    assert bundle.manifest["metrics"]["tuning"]["chosen"] == best["number"]
    assert (tuned / "tuning.png").is_file()
    # every completed trial lists its validation NDCG@20 per domain and slice
    for t in done:
        assert set(t["val_ndcg20"]) == set(bundle.model.domains)


def test_the_search_records_its_budget_as_a_multiple_of_the_first_training(tuned) -> None:  # type: ignore[no-untyped-def]
    tuning = json.loads((tuned / "tuning.json").read_text())
    budget = tuning["budget"]
    assert budget["first_training_s"] > 0
    assert budget["elapsed_s"] >= budget["first_training_s"]
    assert budget["multiple_of_first"] == pytest.approx(
        budget["elapsed_s"] / budget["first_training_s"]
    )
    # the given config is full MICRec, so the third designed trial is content only
    third = tuning["trials"][2]["params"]
    assert third["content"] is True and third["cross_domain"] is False and third["item_map"]
    assert {t["cross_domain_rule"] for t in tuning["trials"]} <= {"content+aligned", "bridge"}


def test_designed_trials_cover_the_parts_once_and_skip_content_without_features() -> None:
    from model.nn.config import MICRecConfig, TrainConfig
    from model.tuning import designed_trials

    mc, tc = MICRecConfig(), TrainConfig()
    with_content = designed_trials(mc, tc, has_content=True)
    kinds = [(p["content"], p["cross_domain"]) for p in with_content]
    # given (= full MICRec here, so once), INMO, content only, cross-domain only
    assert kinds == [(True, True), (False, False), (True, False), (False, True)]
    without = designed_trials(mc, tc, has_content=False)
    assert [(p["content"], p["cross_domain"]) for p in without] == [(False, True), (False, False)]
    assert all("item_map" not in p for p in without)


def test_each_trial_is_scored_against_the_baselines_recorded_in_tuning_json(tuned) -> None:  # type: ignore[no-untyped-def]
    from model.tuning import OBJECTIVE_SLICES, search_objective

    tuning = json.loads((tuned / "tuning.json").read_text())
    floors = tuning["floors"]
    assert set(floors) == set(load_bundle(tuned).model.domains)
    for rows in floors.values():
        assert set(rows) <= set(OBJECTIVE_SLICES) and "all" in rows
        assert all(0.0 <= v <= 1.0 for v in rows.values())
    for t in tuning["trials"]:
        if t["state"] == "complete":
            assert t["objective"] == pytest.approx(search_objective(t["val_ndcg20"], floors))


def test_the_objective_charges_a_slice_below_its_best_baseline() -> None:
    from model.tuning import search_objective

    floors = {"a": {"all": 0.04, "cd_pseudo_cold": 0.025}}
    # A gains on the large slice and drops users new to the domain below most popular
    # (the shape of a real arts-office trial); B holds every slice above its baseline
    a = {"a": {"all": 0.095, "cd_pseudo_cold": 0.020}}
    b = {"a": {"all": 0.087, "cd_pseudo_cold": 0.026}}
    assert search_objective(a, {}, 0.0) > search_objective(b, {}, 0.0)  # the plain mean
    assert search_objective(a, floors) == pytest.approx(0.0575 * (1 - 0.2))
    assert search_objective(b, floors) == pytest.approx(0.0565)
    assert search_objective(b, floors) > search_objective(a, floors)
    # no floor given for a slice, or floor 0: nothing is charged
    assert search_objective(a, floors, 0.0) == pytest.approx(0.0575)
    assert search_objective(a, {"a": {"all": 0.04}}) == pytest.approx(0.0575)
    # a higher multiple charges more; the charge never makes the objective negative
    assert search_objective(b, floors, 1.2) < search_objective(b, floors)
    assert search_objective(a, floors, 10.0) == 0.0


def test_the_floors_are_the_best_baseline_per_slice_on_validation() -> None:
    from model.evaluation import evaluate
    from model.rankers import ContentKNNRanker, PopularRanker
    from model.tuning import OBJECTIVE_SLICES, baseline_floors

    split, features = toy_split()
    floors = baseline_floors(split, features)
    runs = [
        evaluate(r, split, ks=(20,), only=OBJECTIVE_SLICES, stage="val")
        for r in (PopularRanker(split), ContentKNNRanker(split, features))
    ]
    for d in split.domains:
        for s, v in floors[d].items():
            assert v == max(r[d][s]["ndcg@20"] or 0.0 for r in runs)
    # content kNN beats most popular somewhere on topic-structured content
    assert any(
        floors[d][s] > (runs[0][d][s]["ndcg@20"] or 0.0) for d in split.domains for s in floors[d]
    )
    assert baseline_floors(split, None).keys() == floors.keys()


def test_the_trials_fit_the_blend_without_the_parts_fitted_on_the_refit(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The co-purchase boost and the users' other-domain profile mix are fitted once, on
    the chosen trial's refit: inside the trials the profile mix would favour the trials
    without content or alignment (model.tuning.tune)."""
    import model.tuning as tuning
    from model.nn.config import BlendConfig, MICRecConfig, TrainConfig, TuneConfig

    torch.set_num_threads(1)
    seen: list[BlendConfig] = []
    real = tuning.fit_blend

    def spy(model, split, features, cfg, **kw):  # type: ignore[no-untyped-def]
        seen.append(cfg)
        return real(model, split, features, cfg, **kw)

    monkeypatch.setattr(tuning, "fit_blend", spy)
    split, features = toy_split()
    blend = BlendConfig(trials=4, max_users=100, profile_other=(0.0, 0.5))
    out = tuning.tune(
        split,
        features,
        MICRecConfig(dim=16),
        TrainConfig(epochs=2, batch_size=512, lr=0.005),
        TuneConfig(trials=2, blend_trials=3, seed=0),
        blend,
        progress=False,
    )
    assert len(out.trials) == 2 and len(seen) == 3
    assert all(c.profile_other == (0.0,) and not c.copurchase for c in seen[:2])
    assert seen[2].profile_other == (0.0, 0.5) and seen[2].copurchase == blend.copurchase
    assert "objective_by_profile_other" in str(out.blend_report)
