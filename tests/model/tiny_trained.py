"""A tiny synthetic catalogue (text only) with a backbone trained on it, for the tests of
the parts fitted after training (blend, maps)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from model.data.dataset import Dataset
from model.data.loading import load_dataset
from model.data.split import InductiveSplit, build_split
from model.data.synth import SynthConfig, write_synthetic_catalogue
from model.encoders.base import ItemFeatures
from model.pipeline import build_bundle_from_model, load_features
from model.runconfig import RunConfig, load_run_config
from model.training import Trainer


def train_tiny(
    root: Path, *, users: int, epochs: int, model: dict[str, Any] | None = None
) -> tuple[RunConfig, Dataset, InductiveSplit, ItemFeatures | None, Any]:
    """(config, dataset, split, features, trained model) on a fresh catalogue in ``root``."""
    torch.set_num_threads(1)
    write_synthetic_catalogue(root / "data", SynthConfig.tiny(images=False, users=users))
    cfg = load_run_config(
        None,
        {
            "features": {"image": "none", "cache_dir": str(root / "cache")},
            "model": model or {},
            "train": {"epochs": epochs, "patience": 100, "batch_size": 512, "lr": 0.005},
        },
    )
    ds = load_dataset(root / "data")
    split = build_split(ds, cfg.data)
    feats = load_features(ds, cfg, progress=False)
    trained = Trainer(split, feats, cfg.model_config(), cfg.train).fit(progress=False).model
    return cfg, ds, split, feats, trained


def write_tiny_bundle(
    out: Path,
    cfg: RunConfig,
    ds: Dataset,
    split: InductiveSplit,
    feats: ItemFeatures | None,
    model: Any,
    **parts: Any,
) -> Path:
    """The tiny trained model written as a bundle (MiniLM recorded as its text encoder);
    ``parts``: what else build_bundle_from_model takes (blend=, maps=, tuning=)."""
    return build_bundle_from_model(
        out,
        model=model,
        split=split,
        dataset=ds,
        features=feats,
        cfg=cfg,
        encoders={"text": {"name": "minilm-l6-v2", "dim": 384}},
        metrics={},
        **parts,
    )
