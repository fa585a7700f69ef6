"""On the synthetic catalogue, MICRec's components measurably help (seeded).

Measured when written (600 users, 3 domains x 120 items, text only, 15 epochs, lr 5e-3,
seed 0): cold-item NDCG@20 MICRec 59.3 / 53.5 / 64.2 vs INMO 32.6 / 31.1 / 38.7 (food /
kitchen / office), i.e. +25 points on average; cross-domain cold users 40.4 / 34.5 / 43.6
vs 12.3 / 10.5 / 12.6. The asserted margins (10 points) leave room for noise.
Cold items ranked among all items (cold_items_vs_all): see the calibration test below.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.data.loading import load_dataset
from model.data.split import build_split
from model.data.synth import SynthConfig, write_synthetic_catalogue
from model.evaluation import evaluate
from model.pipeline import load_features
from model.rankers import MICRecRanker
from model.runconfig import load_run_config
from model.training import Trainer


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    torch.set_num_threads(2)
    root = tmp_path_factory.mktemp("synth")
    data = root / "data"
    write_synthetic_catalogue(data, SynthConfig.tiny(images=False, users=600))
    cfg = load_run_config(
        None,
        {
            "features": {"image": "none", "cache_dir": str(root / "cache")},
            "train": {"epochs": 15, "patience": 100, "batch_size": 512, "lr": 0.005, "seed": 0},
        },
    )
    ds = load_dataset(data)
    split = build_split(ds, cfg.data)
    feats = load_features(ds, cfg, progress=False)
    out = {}
    for variant in ("inmo", "micrec"):
        res = Trainer(split, feats, cfg.model.ablate(variant), cfg.train).fit(progress=False)
        ranker = MICRecRanker(variant, res.model, split, feats)  # type: ignore[arg-type]
        out[variant] = evaluate(ranker, split, ks=(20,))
        if variant == "micrec":
            raw = MICRecRanker(variant, res.model, split, feats, calibrate_cold=False)  # type: ignore[arg-type]
            out["micrec-uncalibrated"] = evaluate(raw, split, ks=(20,), only=("cold_items_vs_all",))
    return out


def _mean(res: dict, slice_name: str) -> float:
    return float(np.mean([r[slice_name]["ndcg@20"] for r in res.values()]))


def test_micrec_beats_inmo_on_cold_items(results: dict[str, dict]) -> None:
    gain = _mean(results["micrec"], "cold_items") - _mean(results["inmo"], "cold_items")
    print(f"cold items NDCG@20 gain: {100 * gain:.1f} points")
    assert gain > 0.10


def test_micrec_beats_inmo_on_cross_domain_cold_users(results: dict[str, dict]) -> None:
    gain = _mean(results["micrec"], "cd_cold_users") - _mean(results["inmo"], "cd_cold_users")
    print(f"cross-domain cold users NDCG@20 gain: {100 * gain:.1f} points")
    assert gain > 0.10


def test_cold_items_compete_with_warm_items_after_calibration(results: dict[str, dict]) -> None:
    """Ranked among *all* items (as the service does), content-only vectors need the cold
    scale: measured NDCG@20 0.65 / 0.21 / 0.0 without it, 24.7 / 17.6 / 23.0 with it."""
    calibrated = _mean(results["micrec"], "cold_items_vs_all")
    raw = _mean(results["micrec-uncalibrated"], "cold_items_vs_all")
    print(f"cold items among all items NDCG@20: {100 * raw:.1f} -> {100 * calibrated:.1f}")
    assert calibrated > 0.10
    assert calibrated > raw + 0.08


def test_micrec_keeps_warm_quality(results: dict[str, dict]) -> None:
    # content and alignment must not cost accuracy where INMO is strong
    assert _mean(results["micrec"], "all") > _mean(results["inmo"], "all") - 0.03
