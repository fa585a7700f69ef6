"""Real tiny MICRec bundles for service tests against the real engine.

:func:`build_real_bundles` writes the tiny synthetic catalogue (3 domains x 120 items,
300 users, text only) and trains two real bundles on it with ``model.pipeline.train_run``:
``v1`` (30 epochs, seed 0) and ``v2`` (5 epochs, seed 1: another model version, for the
reload tests). Text features are encoded once into a cache shared by both runs; an epoch
takes ~0.1 s, so nearly all of the cost is loading MiniLM and encoding the 360 texts.
Why 30 epochs rather than 8: at 8 the model is undertrained for content-only items (the
registered text-only item of test_real_bundle.py reached the top 20 for 8 of 19 topics,
18 of 19 at 30 epochs), and the extra epochs cost ~2 s.

:func:`running_real` starts the real app (``app.http.main.create_app`` with real ``Settings``,
the production engine factory and the SQLite store named by ``store_url``) behind a
``TestClient``.

Also the offline-evaluation side of the parity checks: :func:`evaluation_top_k` ranks a
domain's users exactly as ``model.evaluation.evaluate`` does (``MICRecRanker`` fold-in
over the split's full train input, train+val masked).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fastapi.testclient import TestClient

from app.http.main import create_app
from app.service import RecommendationService
from app.settings import Settings
from model.data.dataset import Dataset
from model.data.loading import load_dataset
from model.data.split import InductiveSplit, build_split
from model.data.synth import SynthConfig, write_synthetic_catalogue
from model.encoders.base import ItemFeatures
from model.evaluation import _masked_topk, slice_inputs
from model.pipeline import load_features, train_run
from model.rankers import MICRecRanker
from model.runconfig import RunConfig, load_run_config

API_KEY = "real-test-key-0123456789"
AUTH = {"X-API-Key": API_KEY}
ADMIN_KEY = "real-test-admin-key-0123456789"
ADMIN = {"X-API-Key": ADMIN_KEY}
USERS = 300


def run_config(root: Path, *, epochs: int, seed: int) -> RunConfig:
    """The fast text-only recipe of tests/model/test_quality_synth.py."""
    return load_run_config(
        None,
        {
            "features": {"image": "none", "cache_dir": str(root / "feature-cache")},
            "train": {
                "epochs": epochs,
                "patience": 100,
                "batch_size": 512,
                "lr": 0.005,
                "seed": seed,
            },
        },
    )


@dataclass
class RealBundles:
    root: Path
    data_dir: Path
    cfg: RunConfig
    v1: Path
    v2: Path
    dataset: Dataset
    split: InductiveSplit
    features: ItemFeatures | None


def build_real_bundles(root: Path) -> RealBundles:
    """Synthetic catalogue + two trained bundles under ``root`` (~15 s on an idle core;
    most of it is loading MiniLM and encoding the 360 item texts once)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the machine is shared; the app's settings say 1 as well
    try:
        return _build(root)
    finally:
        torch.set_num_threads(threads)


def _build(root: Path) -> RealBundles:
    data_dir = root / "data"
    write_synthetic_catalogue(data_dir, SynthConfig.tiny(images=False, users=USERS))
    cfg = run_config(root, epochs=30, seed=0)
    dataset = load_dataset(data_dir, min_rating=cfg.data.min_rating)
    split = build_split(dataset, cfg.data)
    features = load_features(dataset, cfg, progress=False)
    v1 = train_run(
        data_dir,
        cfg,
        root / "bundle-v1",
        progress=False,
        run_test=False,
        dataset=dataset,
        split=split,
        features=features,
    ).bundle_dir
    v2 = train_run(
        data_dir,
        run_config(root, epochs=5, seed=1),
        root / "bundle-v2",
        progress=False,
        run_test=False,
        dataset=dataset,
        split=split,
        features=features,
    ).bundle_dir
    return RealBundles(root, data_dir, cfg, v1, v2, dataset, split, features)


def real_settings(bundle: Path, state_dir: Path, **overrides: Any) -> Settings:
    """Real ``Settings``: auth on, a SQLite store in ``state_dir``, one thread each."""
    values: dict[str, Any] = {
        "bundle_path": bundle,
        "store_url": f"sqlite:///{state_dir / 'state.db'}",
        "api_keys": [API_KEY],
        "admin_keys": [ADMIN_KEY],
        "torch_threads": 1,
        "faiss_threads": 1,
        "max_n": 500,
        # the first registration starts the encoder process and loads MiniLM in it: on a
        # loaded test machine that can take longer than the production default allows
        "encoder_timeout_s": 300,
    }
    values.update(overrides)
    return Settings(**values)


@contextmanager
def running_real(settings: Settings) -> Iterator[TestClient]:
    """The production app (real engine factory, real store) with the model loaded."""
    app = create_app(settings)
    with TestClient(app) as client:
        service = service_of(client)
        assert service.wait_ready(60), service.loader.status()
        yield client


def service_of(client: TestClient) -> RecommendationService:
    service: RecommendationService = client.app.state.service  # type: ignore[attr-defined]
    return service


def evaluation_top_k(
    rb: RealBundles, bundle: Any, domain: str, users: np.ndarray, k: int, *, cross_domain: bool
) -> list[list[str]]:
    """Raw item ids of the top-``k`` per local user, as ``model.evaluation`` ranks them.

    The ranker is bound to the split's full train input of every domain, i.e. the graph
    the bundle was built on. ``cross_domain=False``: fold-in from the user's train items
    in ``domain``; True: the cross-domain rule from the user's train items in the other
    domains only. Train and val items of ``domain`` are masked (``_masked_topk``).

    (The ``cd_cold`` slice of ``evaluate`` additionally rebuilds the target domain's graph
    without the slice users' edges, which changes every item vector a little; a bundle
    has one fixed graph, so parity is checked against the full-graph ranking.)
    """
    ranker = MICRecRanker(
        "micrec",
        bundle.model,
        rb.split,
        rb.features,
        blend=bundle.blend,
        bridges=bundle.bridges,
        item_maps=bundle.item_maps,
    )
    scorer = ranker.bind(slice_inputs(rb.split, domain, "standard"))
    ds = rb.split.domains[domain]
    scores = scorer.scores(domain, users, cross_domain=cross_domain)
    assert scores is not None
    top = _masked_topk(scores.float().cpu(), users, ds, np.ones(ds.n_items, dtype=bool), k)
    return [[ds.item_ids[i] for i in row if i >= 0] for row in top]


def local_items(rb: RealBundles, domain: str, part: str, user: int) -> list[str]:
    """Raw ids of a local user's ``part`` ("train", "val", "test") items in ``domain``."""
    ds = rb.split.domains[domain]
    pairs: np.ndarray = getattr(ds, part)
    return [ds.item_ids[i] for i in pairs[pairs[:, 0] == user, 1]]
