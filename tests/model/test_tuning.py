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
            "tune": {"trials": 3, "blend_trials": 5},
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
