"""Ablations of the served model: what each part trained after the backbone adds.

    # one run: one dataset, one seed, one backbone (the blend fitted per row on validation)
    python bench/ablation.py run --dataset ../shared/datasets/amazon-arts-office \
        --variant micrec --seed 0 --label arts-office --out docs/results/ablation
    # the tables and plot from every run under --out
    python bench/ablation.py report --out docs/results/ablation

A run trains the backbone once (``--variant``: ``micrec`` = content in the graph and
cross-domain alignment as configured, ``inmo`` = neither; no search), fits the
cross-domain maps and the item map once, then fits the served blend on validation four
times: without maps, with the item map only, with the cross-domain map only, with both.
Further rows (``--only`` picks among all): both maps with the low-degree mix
(``both_maps_mix``), with a blend item term fitted (``both_maps_cold``: the prior of items
without interactions; ``both_maps_decay``: the content decay; model.nn.blend.ITEM_TERMS),
and with twice the blend trials (``both_maps_x2``); every other row has both terms off.
``both_maps_decay_cp`` adds the cross-domain co-purchase boost (model.nn.copurchase) of
users new to a domain to ``both_maps_decay``, ``both_maps_decay_cpw`` the boost of users
with history in the domain too, ``both_maps_decay_nocp`` is ``both_maps_decay`` without
any (``COPURCHASE_ROWS``, whatever the config says); ``both_maps_decay_cpw_own`` is
``both_maps_decay_cpw`` with users' content profile from their own items only (no
other-domain profile mixed in: ``[blend] profile_other = [0.0]``); the other rows follow
the config.
``both_maps_decay_cbridge``, ``_pbridge`` and ``_ebridge`` are ``both_maps_decay`` with
cross-domain maps trained for them that also read the user's content profile in the other
domain (``[bridge] content``), are personalised (``[bridge] personal``), or are an
ensemble of five (``[bridge] ensemble``).
``--checkpoint`` saves the trained backbone, or loads it when it exists, so more rows can
be fitted on the same backbone later.
Each row is scored on the test slices; most-popular and content kNN run on the same split.
So rows of one backbone differ only by the maps, and the two backbones differ only by the
graph's content and alignment. Runs land in OUT/runs/LABEL-VARIANT-sSEED.json; ``report``
writes OUT/ablation.md (mean ± std over seeds) and OUT/ablation.png.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
import tomllib
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from model.blendfit import fit_blend, fit_reducer
from model.bridgefit import content_rows, fit_bridges
from model.commands.runner import set_threads
from model.data.loading import load_dataset
from model.data.split import InductiveSplit, build_split
from model.encoders.base import ItemFeatures
from model.evaluation import PSEUDO_COLD_SLICE, evaluate
from model.maps import Maps, fit_maps
from model.nn.blend import Blend
from model.nn.config import BlendConfig
from model.nn.micrec import MICRec
from model.pipeline import load_features, restrict
from model.rankers import ContentKNNRanker, MICRecRanker, PopularRanker
from model.runconfig import RunConfig, load_run_config
from model.training import Trainer

SLICES = ("all", "new_users", "cd_cold_users", "cold_items", "cold_items_vs_all", "deg_1-5")
ROWS = ("no_maps", "item_map", "bridge", "both_maps")
COPURCHASE_ROWS = {
    "both_maps_decay_nocp": (False, False),
    "both_maps_decay_cp": (True, False),
    "both_maps_decay_cpw": (True, True),
    "both_maps_decay_cpw_own": (True, True),
}
"""([blend] copurchase, copurchase_warm) of the rows that set them whatever the config says."""
"""The maps each blend row is fitted with (model.maps)."""
BASELINES = ("popular", "content_knn")
OTHER_BRIDGES: dict[str, dict[str, Any]] = {
    "both_maps_decay_cbridge": {"content": True},
    "both_maps_decay_pbridge": {"personal": 128},
    "both_maps_decay_ebridge": {"ensemble": 5},
}
"""Rows of ``both_maps_decay`` with other cross-domain maps ([bridge] keys changed)."""


def seeded_config(cfg: RunConfig, variant: str, seed: int) -> RunConfig:
    """``cfg`` with ``variant`` and every seeded part (split, training, blend, maps) at
    ``seed``, so seeds are independent repetitions."""
    return replace(
        cfg,
        variant=variant,
        data=replace(cfg.data, seed=seed),
        train=replace(cfg.train, seed=seed),
        blend=replace(cfg.blend, seed=seed),
        bridge=replace(cfg.bridge, seed=seed),
        item_map=replace(cfg.item_map, seed=seed),
    )


def backbone(
    dataset_path: Path, cfg: RunConfig, checkpoint: Path | None
) -> tuple[InductiveSplit, ItemFeatures | None, MICRec]:
    """The split, features and trained backbone of ``cfg``: the weights are loaded from
    ``checkpoint`` when it exists (our own file from an earlier run of the same split:
    tensors only, no pickle), else trained and saved there (None: trained, not saved)."""
    dataset = load_dataset(dataset_path, min_rating=cfg.data.min_rating)
    split = restrict(build_split(dataset, cfg.data), cfg.domains)
    features = load_features(dataset, cfg, progress=False)
    trainer = Trainer(split, features, cfg.model_config(), cfg.train)
    if checkpoint is not None and checkpoint.exists():
        trainer.model.load_state_dict(torch.load(checkpoint, weights_only=True))
        model = trainer.model
    else:
        model = trainer.fit(progress=False).model
        if checkpoint is not None:
            checkpoint.parent.mkdir(parents=True, exist_ok=True)
            torch.save(model.state_dict(), checkpoint)
    assert isinstance(model, MICRec)
    return split, features, model


def probe_arguments(ap: argparse.ArgumentParser) -> None:
    """The arguments of the probes that reuse a saved backbone of this benchmark
    (bench/cd_cold_added.py, bench/cd_cold_boost.py)."""
    ap.add_argument("--dataset", type=Path, required=True)
    ap.add_argument("--config", type=Path, default=Path("configs/bench-quality.toml"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--k-core", type=int, default=None)
    ap.add_argument("--sparsify", default=None, help="DOMAIN=SHARE")
    ap.add_argument("--variant", default="inmo")
    ap.add_argument("--checkpoint", type=Path, required=True)
    ap.add_argument("--label", required=True)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, required=True)


def probe_backbone(
    args: argparse.Namespace,
) -> tuple[RunConfig, InductiveSplit, ItemFeatures | None, MICRec]:
    """Logging and threads set, the seeded config of ``args`` (``probe_arguments``) and
    its split, features and backbone (``backbone``)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    set_threads(args.threads)
    over: dict[str, dict[str, Any]] = {"data": {}}
    if args.k_core is not None:
        over["data"]["k_core"] = args.k_core
    if args.sparsify:
        d, share = args.sparsify.split("=")
        over["data"]["sparsify"] = {d: float(share)}
    cfg = seeded_config(load_run_config(args.config, over), args.variant, args.seed)
    split, features, model = backbone(args.dataset, cfg, args.checkpoint)
    return cfg, split, features, model


def served_row(
    cfg: RunConfig,
    split: InductiveSplit,
    features: ItemFeatures | None,
    model: MICRec,
    blend_cfg: BlendConfig,
) -> tuple[MICRecRanker, Blend, dict[str, Any], Maps]:
    """A probe's served model on a backbone: both maps fitted with ``cfg``'s settings, the
    blend with ``blend_cfg``; returns the ranker, the blend, its fit report and the maps."""
    maps = fit_maps(model, split, features, cfg.bridge, cfg.item_map)
    blend, report = fit_blend(
        model, split, features, blend_cfg, bridges=maps.bridges, item_maps=maps.item_maps
    )
    ranker = MICRecRanker(
        "served",
        model,
        split,
        features,
        blend=blend,
        bridges=maps.bridges,
        item_maps=maps.item_maps,
    )
    return ranker, blend, report, maps


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("command", choices=("run", "report"))
    ap.add_argument("--label", default=None, help="dataset label in file names and tables")
    ap.add_argument("--dataset", type=Path, default=None)
    ap.add_argument("--config", type=Path, default=Path("configs/bench-quality.toml"))
    ap.add_argument("--variant", default="inmo")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--k-core", type=int, default=None)
    ap.add_argument("--sparsify", default=None, help="DOMAIN=SHARE")
    ap.add_argument("--set-bridge", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--set-item-map", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--set-blend", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        help="backbone weights: loaded when the file exists (no training), else saved there",
    )
    ap.add_argument(
        "--only", default=None, help="comma-separated blend variants to run (default: all)"
    )
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    if args.command == "report":
        from ablation_report import write_report

        write_report(args.out)
        return 0
    if args.dataset is None or args.label is None:
        ap.error("run needs --dataset and --label")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    set_threads(args.threads)
    over: dict[str, dict[str, Any]] = {"data": {}, "bridge": {}, "item_map": {}, "blend": {}}
    if args.k_core is not None:
        over["data"]["k_core"] = args.k_core
    if args.sparsify:
        d, share = args.sparsify.split("=")
        over["data"]["sparsify"] = {d: float(share)}
    for section, items in (
        ("bridge", args.set_bridge),
        ("item_map", args.set_item_map),
        ("blend", args.set_blend),
    ):
        for item in items:
            k, _, v = item.partition("=")
            over[section][k] = tomllib.loads(f"v = {v}")["v"]  # 3, 1e-3, [0, 1, 3], true
    cfg = seeded_config(load_run_config(args.config, over), args.variant, args.seed)
    t0 = time.perf_counter()
    split, features, model = backbone(args.dataset, cfg, args.checkpoint)
    assert isinstance(model, MICRec)
    out: dict[str, Any] = {
        "label": args.label,
        "dataset": str(args.dataset),
        "machine": f"{os.cpu_count()} cores, {args.threads} thread(s), load {os.getloadavg()[0]:.1f}",
        "variant": args.variant,
        "seed": args.seed,
        "k_core": cfg.data.k_core,
        "sparsify": cfg.data.sparsify,
        "bridge_config": vars(cfg.bridge),
        "blend_config": vars(cfg.blend),
        "checkpoint": None if args.checkpoint is None else str(args.checkpoint),
        "train_seconds": time.perf_counter() - t0,
        "pseudo_cold_users": {d: len(split.pseudo_cold_users(d)) for d in split.domains},
        "cd_cold_test_users": {d: len(split.cross_domain_cold_users(d)) for d in split.domains},
    }
    out["popular"] = evaluate(PopularRanker(split), split, ks=(20,), only=SLICES)
    if features is not None and "text" in features.modalities:
        out["content_knn"] = evaluate(
            ContentKNNRanker(split, features), split, ks=(20,), only=SLICES
        )
    t1 = time.perf_counter()
    maps = fit_maps(model, split, features, cfg.bridge, cfg.item_map)
    out["maps_seconds"] = time.perf_counter() - t1
    out["maps_report"] = maps.report
    given = model.config.cross_domain_rule
    wanted = set(args.only.split(",")) if args.only else None
    # one content PCA for every row's blend and the maps that read content
    reducer = fit_reducer(split, features, cfg.blend.content_dim)
    content = None if reducer is None else content_rows(reducer, split, features)
    other_bridges: dict[str, Any] = {}
    for name, change in OTHER_BRIDGES.items():
        if wanted is not None and name not in wanted:
            continue
        if change.get("content") and content is None:
            continue  # no content to read
        t1 = time.perf_counter()
        other_bridges[name], out[f"{name}_bridge_report"] = fit_bridges(
            model, split, features, replace(cfg.bridge, **change), content=content
        )
        out[f"{name}_bridge_seconds"] = time.perf_counter() - t1
    variants = {
        "no_maps": Maps(),
        "item_map": Maps(item_maps=maps.item_maps),
        "bridge": Maps(bridges=maps.bridges),
        "both_maps": Maps(bridges=maps.bridges, item_maps=maps.item_maps),
        # both maps and the low-degree mix chosen on validation
        "both_maps_mix": Maps(bridges=maps.bridges, item_maps=maps.item_maps),
        # both maps and an item term fitted on validation (model.nn.blend.ITEM_TERMS)
        "both_maps_cold": Maps(bridges=maps.bridges, item_maps=maps.item_maps),
        "both_maps_decay": Maps(bridges=maps.bridges, item_maps=maps.item_maps),
        # with and without the cross-domain co-purchase boost
        "both_maps_decay_cp": Maps(bridges=maps.bridges, item_maps=maps.item_maps),
        "both_maps_decay_cpw": Maps(bridges=maps.bridges, item_maps=maps.item_maps),
        "both_maps_decay_cpw_own": Maps(bridges=maps.bridges, item_maps=maps.item_maps),
        "both_maps_decay_nocp": Maps(bridges=maps.bridges, item_maps=maps.item_maps),
        # both maps, twice the blend trials, no term: what the terms' extra trials alone do
        "both_maps_x2": Maps(bridges=maps.bridges, item_maps=maps.item_maps),
    }
    for name, bridges in other_bridges.items():
        variants[name] = Maps(bridges=bridges, item_maps=maps.item_maps)
    terms = {
        "both_maps_cold": "cold_prior",
        "both_maps_decay": "content_decay",
        "both_maps_decay_cp": "content_decay",
        "both_maps_decay_cpw": "content_decay",
        "both_maps_decay_cpw_own": "content_decay",
        "both_maps_decay_nocp": "content_decay",
        **{name: "content_decay" for name in OTHER_BRIDGES},
    }
    if wanted is not None:
        variants = {k: v for k, v in variants.items() if k in wanted}
    for name, mp in variants.items():
        model.config.cross_domain_rule = given
        grid = cfg.item_map.low_degree_k if name == "both_maps_mix" else (0.0,)
        blend, rep = fit_blend(
            model,
            split,
            features,
            replace(
                cfg.blend,
                trials=cfg.blend.trials * (2 if name == "both_maps_x2" else 1),
                cold_prior=terms.get(name) == "cold_prior",
                content_decay=terms.get(name) == "content_decay",
                copurchase=COPURCHASE_ROWS.get(name, (cfg.blend.copurchase,))[0],
                copurchase_warm=COPURCHASE_ROWS.get(name, (0, cfg.blend.copurchase_warm))[-1],
                profile_other=(0.0,) if name.endswith("_own") else cfg.blend.profile_other,
            ),
            bridges=mp.bridges,
            item_maps=mp.item_maps,
            low_degree_grid=grid,
            reducer=reducer,
        )
        out[f"{name}_low_degree"] = {
            d: {k: r["inductive"].get(k) for k in ("low_degree_k", "objective_by_low_degree_k")}
            for d, r in rep.items()
            if "inductive" in r
        }
        ranker = MICRecRanker(
            name, model, split, features, blend=blend, bridges=mp.bridges, item_maps=mp.item_maps
        )
        out[name] = evaluate(ranker, split, ks=(20,), only=SLICES)
        out[f"{name}_rule"] = model.config.cross_domain_rule
        out[f"{name}_rules_val"] = {
            d: r.get("cross_domain", {}).get("rules_val_ndcg@20") for d, r in rep.items()
        }
        out[f"{name}_val"] = evaluate(
            ranker, split, ks=(20,), only=("all", PSEUDO_COLD_SLICE), stage="val"
        )
        out[f"{name}_weights"] = blend.weights_json()
        out[f"{name}_item_terms"] = blend.item_terms
        out[f"{name}_copurchase_pop"] = None if blend.copurchase is None else blend.copurchase.pop
        out[f"{name}_profile_other"] = blend.profile_other
        out[f"{name}_profile_other_objectives"] = {
            d: r["inductive"].get("objective_by_profile_other")
            for d, r in rep.items()
            if "inductive" in r
        }
    out["seconds"] = time.perf_counter() - t0
    path = args.out / "runs" / f"{args.label}-{args.variant}-s{args.seed}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1, default=str))
    methods = [m for m in ("popular", "content_knn", *variants) if m in out]
    for d in split.domains:
        print(f"== {d} (test NDCG@20 %)")
        print("method".ljust(12), *(sl[:12].rjust(12) for sl in SLICES))
        for m in methods:
            vals = [out[m][d].get(sl, {}).get("ndcg@20") for sl in SLICES]
            print(
                m.ljust(12), *(("n/a" if v is None else f"{100 * v:.2f}").rjust(12) for v in vals)
            )
    if "bridge_rule" in out:
        print("rule with the cross-domain map:", out["bridge_rule"], out["bridge_rules_val"])
    if "both_maps_mix_low_degree" in out:
        print("low-degree mix:", out["both_maps_mix_low_degree"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
