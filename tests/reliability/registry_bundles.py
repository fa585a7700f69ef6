"""Tiny real bundles for the registry tests (tests/reliability/test_registry_replicas.py,
tests/reliability/test_promotion_race.py): one trained once per session (synthetic
catalogue, no content encoders, 2 epochs), and variants of it whose manifests differ in
fields the registry's checksums do not cover (another ``model_version``, or a model config
this code cannot load, like a bundle written by another code version)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path


def tiny_bundle(root: Path) -> Path:
    """Train the tiny bundle under ``root`` (one torch thread); returns its directory."""
    import torch

    from model.data.synth import SynthConfig, write_synthetic_catalogue
    from model.pipeline import train_run
    from model.runconfig import load_run_config

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        write_synthetic_catalogue(root / "data", SynthConfig.tiny(images=False, users=120))
        cfg = load_run_config(
            None,
            {
                "features": {"text": "none", "image": "none", "cache_dir": str(root / "cache")},
                "train": {"epochs": 2, "patience": 100, "batch_size": 512, "seed": 0},
            },
        )
        return train_run(
            root / "data", cfg, root / "bundle", progress=False, run_test=False
        ).bundle_dir
    finally:
        torch.set_num_threads(threads)


def variant(src: Path, dst: Path, **changes: object) -> Path:
    """A copy of ``src`` with top-level manifest fields changed (not covered by sha256)."""
    shutil.copytree(src, dst)
    manifest = json.loads((dst / "manifest.json").read_text())
    for key, value in changes.items():
        if isinstance(value, dict):
            manifest[key] = {**manifest[key], **value}
        else:
            manifest[key] = value
    (dst / "manifest.json").write_text(json.dumps(manifest))
    return dst
