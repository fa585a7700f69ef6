"""Dataset folder -> split -> features -> trained model -> test metrics -> bundle.

The one function the ``train`` command, the demo builder and the benchmarks share.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.blendfit import fit_blend, fit_reducer
from model.bridgefit import serving_embedders
from model.bundle import save_bundle
from model.data.dataset import Dataset
from model.data.loading import load_dataset
from model.data.split import InductiveSplit, build_split
from model.encoders.base import ItemFeatures
from model.encoders.factory import BUILTIN_MODALITY, create_encoder, created_encoder
from model.encoders.records import record_for
from model.evaluation import evaluate
from model.maps import Maps, fit_maps
from model.nn.blend import Blend, DomainBlend
from model.nn.micrec import MICRec
from model.queryfit import fit_query_weights, title_features
from model.rankers import MICRecRanker
from model.runconfig import ConfigError, RunConfig
from model.training import (
    Trainer,
    TrainResult,
    distributed_rank_world,
    domain_features,
    plot_history,
)
from model.tuning import plot_trials, tune

log = logging.getLogger(__name__)


def data_fingerprint(dataset_dir: Path, split_config: dict[str, Any]) -> str:
    """sha256 over the dataset files and the split config: a bundle's data identity."""
    h = hashlib.sha256()
    for name in ("interactions.csv", "items.csv"):
        with open(Path(dataset_dir) / name, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    h.update(json.dumps(split_config, sort_keys=True, default=str).encode())
    return h.hexdigest()


def restrict(split: InductiveSplit, domains: list[str]) -> InductiveSplit:
    if not domains:
        return split
    missing = sorted(set(domains) - set(split.domains))
    if missing:
        raise ConfigError(
            f"[data] domains: {missing} not in the dataset (it has {sorted(split.domains)})"
        )
    return InductiveSplit(split.config, {d: split.domains[d] for d in domains})


def split_for(dataset: Dataset, cfg: RunConfig) -> InductiveSplit:
    """The split of ``cfg.data``, restricted to ``cfg.domains``; a config naming a domain
    the data lacks is a :class:`ConfigError`."""
    try:
        split = build_split(dataset, cfg.data)
    except ValueError as err:  # sparsify names a domain the data lacks
        raise ConfigError(f"[data] {err}") from None
    return restrict(split, cfg.domains)


def load_features(
    dataset: Dataset, cfg: RunConfig, *, progress: bool = True
) -> ItemFeatures | None:
    """Encode (or read from cache) the modalities the model or the score blend's content
    part uses; None if neither uses any."""
    wanted = {"text": cfg.features.text, "image": cfg.features.image}
    used = set(cfg.model_config().modalities)
    if cfg.blend.enabled and cfg.blend.content_dim > 0:
        used |= {"text", "image"}
    mods = {m: n for m, n in wanted.items() if n != "none" and m in used}
    if not mods:
        return None
    from model.encoders.cache import encode_dataset
    from model.encoders.factory import create_encoder

    encoders = {m: create_encoder(**cfg.features.encoder_args(m)) for m in mods}
    features, _report = encode_dataset(
        dataset,
        encoders,
        Path(cfg.features.cache_dir),
        batch_size=cfg.features.batch_size,
        progress=progress,
    )
    # drop modalities no item has (e.g. images of a text-only dataset): graceful degradation
    features.modalities = {m: f for m, f in features.modalities.items() if f.mask.any()}
    return features


@dataclass
class RunOutput:
    bundle_dir: Path
    result: TrainResult
    test_metrics: dict[str, Any]


def build_bundle_from_model(
    out_dir: Path,
    *,
    model: MICRec,
    split: InductiveSplit,
    dataset: Dataset,
    features: ItemFeatures | None,
    cfg: RunConfig,
    encoders: dict[str, dict[str, Any]],
    metrics: dict[str, Any],
    blend: Blend | None = None,
    tuning: dict[str, Any] | None = None,
    maps: Maps | None = None,
) -> Path:
    """Serving state on the split's full training input (the graph evaluation reads)."""
    embedders = serving_embedders(model, split, features)
    catalogue, histories, blends = {}, {}, {}
    for d in model.domains:
        ds = split.domains[d]
        if maps is not None and maps.item_maps is not None:
            embedders[d].attach_item_map(
                maps.item_maps, *domain_features(features, ds.item_ids, maps.item_maps.modalities)
            )
        if blend is not None:
            raw, _ = domain_features(
                features, ds.item_ids, blend.reducer.modalities if blend.reducer else ()
            )
            blends[d] = blend.for_domain(d, embedders[d].item_degree, raw)
        catalogue[d] = {
            "user_ids": ds.user_ids,
            "item_ids": ds.item_ids,
            "titles": [dataset.items[i].title for i in ds.item_ids],
            "categories": [dataset.items[i].categories for i in ds.item_ids],
            "popularity": np.bincount(ds.train[:, 1], minlength=ds.n_items),
        }
        histories[d] = ds.train
    if blend is not None and blend.copurchase is not None:  # on the graph it serves with
        blend.copurchase = blend.copurchase.on_graph(
            {
                d: (split.domains[d].user_ids, split.domains[d].n_items, histories[d])
                for d in histories
            }
        )
    if blend is not None and blends:
        report = fit_query(blend, blends, split, dataset, features, encoders, cfg)
        if report:
            tuning = {**(tuning or {}), "query": report}
    split_cfg = {**asdict(split.config)}
    data = {
        "dataset": str(Path(dataset.root).resolve()),
        "name": dataset.name or Path(dataset.root).name,
        "split_config": split_cfg,
        "domains": list(model.domains),
        "fingerprint": data_fingerprint(Path(dataset.root), split_cfg),
        "run_config": cfg.to_dict(),
    }
    return save_bundle(
        out_dir,
        model=model,
        embedders=embedders,
        catalogue=catalogue,
        histories=histories,
        encoders=encoders,
        data=data,
        metrics=metrics,
        blends=blends or None,
        blend=blend,
        tuning=tuning,
        bridges=None if maps is None else maps.bridges,
        item_maps=None if maps is None else maps.item_maps,
    )


def fit_query(
    blend: Blend,
    blends: dict[str, DomainBlend],
    split: InductiveSplit,
    dataset: Dataset,
    features: ItemFeatures | None,
    encoders: dict[str, dict[str, Any]],
    cfg: RunConfig,
) -> dict[str, Any]:
    """Fit the weights of query-started users (model.queryfit) into ``blend`` and
    ``blends``; returns the fit's report ({} without a content part)."""
    if blend.reducer is None:
        return {}
    mods = blend.reducer.modalities
    text = None
    if "text" in mods and "text" in encoders:
        name = str(encoders["text"]["name"])
        text = created_encoder(name) or (create_encoder(name) if name in BUILTIN_MODALITY else None)
    titles = {d: [dataset.items[i].title for i in split.domains[d].item_ids] for d in blends}
    pictures = {
        d: domain_features(features, split.domains[d].item_ids, ("image",))[0] for d in blends
    }
    weights, report = fit_query_weights(
        split,
        blend.reducer,
        blends,
        title_features(titles, text, pictures, mods),
        seed=cfg.blend.seed,
        max_users=cfg.blend.max_users,
    )
    blend.query = weights
    for d, w in weights.items():
        blends[d].query = w
    return report


@dataclass
class ServedModel:
    """What ``micrec train`` serves: the trained model, its fitted blend, the tuning
    record, and the run config of the chosen trial."""

    result: TrainResult
    blend: Blend | None
    tuning: dict[str, Any] | None
    cfg: RunConfig
    rank: int = 0
    """Process rank under torchrun; only rank 0 fits the blend and writes the bundle."""
    maps: Maps = field(default_factory=Maps)
    """The cross-domain and item maps (model.maps)."""


def fit_served_model(
    split: InductiveSplit,
    features: ItemFeatures | None,
    cfg: RunConfig,
    *,
    progress: bool = True,
    label: str = "",
) -> ServedModel:
    """Tune (``[tune]``, when trials > 1), train, fit the cross-domain maps (``[bridge]``)
    and the score blend (``[blend]``).

    The one recipe shared by ``micrec train`` and bench/quality.py's ``micrec`` method.
    Tuning runs in single-process jobs only; under torchrun the config is trained as given.
    """
    mc = cfg.model_config()
    tuning: dict[str, Any] | None = None
    blend: Blend | None = None
    maps = Maps()
    _, world = distributed_rank_world()
    if cfg.tune.trials > 1 and world == 1:
        log.info(
            "tuning %s: up to %d trainings, %.0f s budget (validation only)",
            label,
            cfg.tune.trials,
            cfg.tune.timeout_s,
        )
        seed = cfg.train.seed if cfg.tune.seed is None else cfg.tune.seed
        tuned = tune(
            split,
            features,
            mc,
            cfg.train,
            replace(cfg.tune, seed=seed),
            cfg.blend,
            bridge_cfg=cfg.bridge,
            item_map_cfg=cfg.item_map,
            progress=progress,
        )
        result, blend, maps = tuned.result, tuned.blend, tuned.maps
        cfg = replace(cfg, model=tuned.model_config, variant="micrec", train=tuned.train_config)
        tuning = {
            "trials": tuned.trials,
            "chosen": tuned.chosen,
            "blend": tuned.blend_report,
            "budget": tuned.budget,
            "floors": tuned.floors,
            **maps.report,
        }
    else:
        trainer = Trainer(split, features, mc, cfg.train)
        log.info(
            "training %s on %s: domains %s, modalities %s, %d steps/epoch",
            cfg.variant,
            label,
            trainer.domains,
            trainer.model.modalities if isinstance(trainer.model, MICRec) else [],
            trainer.steps_per_epoch(),
        )
        result = trainer.fit(progress=progress and trainer.rank == 0)
        if trainer.rank != 0:
            return ServedModel(result, None, None, cfg, rank=trainer.rank)
    if tuning is None:  # trained once: the maps and the blend are fitted here
        # one content PCA for the blend and the maps that read content profiles
        reducer = fit_reducer(split, features, cfg.blend.content_dim) if cfg.blend.enabled else None
        maps = fit_maps(result.model, split, features, cfg.bridge, cfg.item_map, reducer)  # type: ignore[arg-type]
        tuning = dict(maps.report)
        if cfg.blend.enabled:
            blend, blend_report = fit_blend(
                result.model,  # type: ignore[arg-type]
                split,
                features,
                cfg.blend,
                bridges=maps.bridges,
                item_maps=maps.item_maps,
                reducer=reducer,
                low_degree_grid=cfg.item_map.low_degree_k,
            )
            tuning["blend"] = blend_report
    if not cfg.blend.enabled:
        blend = None
    # the blend fit may choose the cross-domain rule (written to the model's config)
    if isinstance(result.model, MICRec):
        rule = result.model.config.cross_domain_rule
        cfg = replace(cfg, model=replace(cfg.model, cross_domain_rule=rule))
    return ServedModel(result, blend, tuning, cfg, maps=maps)


def train_run(
    dataset_dir: str | Path,
    cfg: RunConfig,
    out_dir: str | Path,
    *,
    progress: bool = True,
    run_test: bool = True,
    dataset: Dataset | None = None,
    split: InductiveSplit | None = None,
    features: ItemFeatures | None = None,
) -> RunOutput:
    """Train ``cfg`` on ``dataset_dir``; writes the bundle, the curve PNG and history JSON."""
    dataset_dir = Path(dataset_dir)
    out_dir = Path(out_dir)
    torch.manual_seed(cfg.train.seed)
    dataset = dataset or load_dataset(dataset_dir, min_rating=cfg.data.min_rating)
    split = restrict(split, cfg.domains) if split is not None else split_for(dataset, cfg)
    if features is None:
        features = load_features(dataset, cfg, progress=progress)
    served = fit_served_model(split, features, cfg, progress=progress, label=str(dataset_dir))
    if served.rank != 0:  # under torchrun only rank 0 evaluates and writes the bundle
        return RunOutput(out_dir, served.result, {})
    result, blend, tuning, cfg = served.result, served.blend, served.tuning, served.cfg
    maps = served.maps
    model = result.model
    assert isinstance(model, MICRec)
    test_metrics: dict[str, Any] = {}
    if run_test:
        test_metrics = evaluate(
            MICRecRanker(
                cfg.variant,
                model,
                split,
                features,
                blend=blend,
                bridges=maps.bridges,
                item_maps=maps.item_maps,
            ),
            split,
        )
    encoders = {}
    if features is not None:
        mods = (
            set(model.modalities)
            | set(blend.reducer.modalities if blend and blend.reducer else ())
            | set(maps.item_maps.modalities if maps.item_maps else ())
        )
        for m in sorted(mods):
            # how to rebuild the encoder at serving time (model.encoders.records)
            encoders[m] = record_for(features.modalities[m].encoder, features.modalities[m].dim)
    metrics = {
        "best_epoch": result.best_epoch,
        "best_val_ndcg@20": result.best_val,
        "epochs_run": len(result.history),
        "seconds_per_epoch": result.seconds_per_epoch,
        "peak_memory_mb": result.peak_memory_mb,
        "device": cfg.train.device,
        "test": test_metrics,
    }
    if tuning and "trials" in tuning:
        metrics["tuning"] = {
            "trials": len(tuning["trials"]),
            "chosen": tuning["chosen"],
            "chosen_params": tuning["trials"][tuning["chosen"]]["params"],
        }
    bundle = build_bundle_from_model(
        out_dir,
        model=model,
        split=split,
        dataset=dataset,
        features=features,
        cfg=cfg,
        encoders=encoders,
        metrics=metrics,
        blend=blend,
        tuning=tuning,
        maps=maps,
    )
    (out_dir / "history.json").write_text(json.dumps(result.history, indent=1))
    if tuning and "trials" in tuning:
        plot_trials(tuning["trials"], tuning["chosen"], out_dir / "tuning.png")
    plot_history(
        result.history, out_dir / "training_curve.png", title=f"{cfg.variant} on {dataset_dir.name}"
    )
    return RunOutput(bundle, result, test_metrics)


def evaluate_bundle(
    bundle_dir: str | Path,
    *,
    dataset_dir: str | Path | None = None,
    baselines: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Every slice for the bundle's model (and optionally popular / content kNN), on the
    exact split it was trained on (rebuilt from the recorded config, fingerprint-checked)."""
    from model.bundle import load_bundle
    from model.rankers import ContentKNNRanker, PopularRanker
    from model.runconfig import run_config_from_dict

    bundle = load_bundle(bundle_dir)
    data = bundle.manifest["data"]
    root = Path(dataset_dir or data["dataset"])
    cfg = run_config_from_dict(data["run_config"])
    fp = data_fingerprint(root, data["split_config"])
    if fp != data["fingerprint"]:
        raise ValueError(
            f"{root} is not the data this bundle was trained on (fingerprint mismatch)"
        )
    dataset = load_dataset(root, min_rating=cfg.data.min_rating)
    split = restrict(build_split(dataset, cfg.data), list(bundle.model.domains))
    features = load_features(dataset, cfg, progress=progress)
    results: dict[str, Any] = {
        cfg.variant: evaluate(
            MICRecRanker(
                cfg.variant,
                bundle.model,
                split,
                features,
                blend=bundle.blend,
                bridges=bundle.bridges,
                item_maps=bundle.item_maps,
            ),
            split,
        )
    }
    if baselines:
        results["popular"] = evaluate(PopularRanker(split), split)
        if features is not None and "text" in features.modalities:
            results["content-knn"] = evaluate(ContentKNNRanker(split, features), split)
    return results
