"""Recommendation quality benchmark: baselines, INMO, MICRec and its ablations per slice.

    python bench/quality.py --dataset ../shared/datasets/amazon-arts-office \
        --seeds 0 1 2 --out docs/results/quality-arts-office

For each seed: one split (docs/evaluation.md), one feature cache, then every method is
trained on the same old x old interactions and scored through the same evaluation code
(model.evaluation). Writes results.json (every seed), results.md (mean ± std over seeds;
per domain the slice tables and a coverage table: coverage@20, long-tail share@20),
and plots: per-slice bars, NDCG@20 by item-degree bucket, and (with --sparsify-sweep) the
gain of MICRec over INMO as the target domain's training data shrinks.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
import tomllib
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from machine import cpu_model, git_commit
from quality_compare import combine

from model.commands.runner import set_threads
from model.data.loading import load_dataset
from model.data.split import build_split
from model.evaluation import evaluate
from model.nn.config import ABLATIONS
from model.pipeline import fit_served_model, load_features, restrict
from model.rankers import ContentKNNRanker, LightGCN, LightGCNRanker, MICRecRanker, PopularRanker
from model.reporting import bar_chart, coverage_table, markdown_table, targets_table
from model.runconfig import RunConfig, load_run_config
from model.training import Trainer

log = logging.getLogger("bench.quality")
DEFAULT_METHODS = "popular,content-knn,lightgcn,inmo,micrec,micrec-untuned,micrec-no-blend"
SERVED: dict[str, dict[str, Any]] = {
    # what `micrec train` produces by default: [tune] search + cross-domain maps + blend
    "micrec": {},
    # the configuration as given + maps + blend (no search)
    "micrec-untuned": {"tune": {"trials": 0}},
    # ablations of the served default
    "micrec-no-bridge": {"bridge": {"enabled": False}},
    "micrec-untuned-no-bridge": {"tune": {"trials": 0}, "bridge": {"enabled": False}},
    "inmo-blend": {"tune": {"trials": 0}, "variant": "inmo"},
    "inmo-blend-no-bridge": {
        "tune": {"trials": 0},
        "variant": "inmo",
        "bridge": {"enabled": False},
    },
    # an EMCDR-style baseline (Man et al., IJCAI 2017): a collaborative model per domain
    # (the INMO backbone, no content) and a mapping trained on the shared users that
    # serves users new to a domain; the model score alone (no blend, no item map)
    "emcdr": {
        "tune": {"trials": 0},
        "variant": "inmo",
        "model": {"cross_domain_rule": "bridge"},
        "blend": {"enabled": False},
        "item_map": {"enabled": False},
    },
}
"""Methods trained by model.pipeline.fit_served_model (the recipe of `micrec train`), with
the run-config overrides that make each one. Every other trained method is an ablation of
model.nn.config.ABLATIONS trained once and scored by the model alone; ``micrec-no-blend``
is the configuration as given without tuning or blend (the previous default)."""


def machine() -> dict[str, Any]:
    return {
        "cores": os.cpu_count(),
        "cpu": cpu_model(),
        "python": platform.python_version(),
        "gpu": None,
    }


def run_method(
    method: str, cfg: RunConfig, split, features, *, progress: bool
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(evaluation results, training info) for one method on one split."""
    if method == "popular":
        return evaluate(PopularRanker(split), split), {}
    if method == "content-knn":
        if features is None or "text" not in features.modalities:
            return {d: {} for d in split.domains}, {"n/a": "no text features"}
        return evaluate(ContentKNNRanker(split, features), split), {}
    t0 = time.perf_counter()
    if method in SERVED:
        run = with_overrides(cfg, SERVED[method])
        served = fit_served_model(split, features, run, progress=progress, label=method)
        model = served.result.model
        served_ranker = MICRecRanker(
            method,
            model,  # type: ignore[arg-type]
            split,
            features,
            blend=served.blend,
            bridges=served.maps.bridges,
            item_maps=served.maps.item_maps,
        )
        info = {
            "best_epoch": served.result.best_epoch,
            "epochs_run": len(served.result.history),
            "best_val_ndcg@20": served.result.best_val,
            "seconds_per_epoch": served.result.seconds_per_epoch,
            "train_seconds": time.perf_counter() - t0,
            "peak_memory_mb": served.result.peak_memory_mb,
            "chosen_config": served.cfg.model.to_dict(),
            "tuning_trials": (served.tuning or {}).get("trials"),
            "tuning_floors": (served.tuning or {}).get("floors"),
            "profile_other": dict(served.blend.profile_other) if served.blend else None,
            "blend_weights": served.blend.weights_json() if served.blend else None,
            "cross_domain_rule": served.cfg.model.cross_domain_rule,
            "maps": served.maps.report,
        }
        # the validation slices the blend was fitted on, next to the test ones: whether
        # validation sees a difference that test shows (bench/ablation_served.py)
        info["val"] = evaluate(served_ranker, split, stage="val")
        return evaluate(served_ranker, split), info
    if method == "micrec-no-blend":
        method = "micrec"
    if method == "lightgcn":
        mc = replace(cfg.model.ablate("inmo"), self_enhanced_weight=0.0)
        tr = Trainer(split, None, mc, cfg.train, model_factory=LightGCN)
        res = tr.fit(progress=progress)
        ranker: Any = LightGCNRanker(res.model, split, tr.templates)  # type: ignore[arg-type]
    else:
        mc = cfg.model.ablate(method)
        tr = Trainer(split, features, mc, cfg.train)
        res = tr.fit(progress=progress)
        ranker = MICRecRanker(method, res.model, split, features)  # type: ignore[arg-type]
    info = {
        "best_epoch": res.best_epoch,
        "epochs_run": len(res.history),
        "best_val_ndcg@20": res.best_val,
        "seconds_per_epoch": res.seconds_per_epoch,
        "train_seconds": time.perf_counter() - t0,
        "peak_memory_mb": res.peak_memory_mb,
    }
    return evaluate(ranker, split), info


def with_overrides(cfg: RunConfig, over: dict[str, Any]) -> RunConfig:
    """``cfg`` with the keys of ``over``'s sections (tune, bridge, item_map, blend, model)
    replaced and its ``variant``, if given (``SERVED``, bench/ablation_served.py's rows)."""
    return replace(
        cfg,
        tune=replace(cfg.tune, **over.get("tune", {})),
        bridge=replace(cfg.bridge, **over.get("bridge", {})),
        item_map=replace(cfg.item_map, **over.get("item_map", {})),
        blend=replace(cfg.blend, **over.get("blend", {})),
        model=replace(cfg.model, **over.get("model", {})),
        variant=over.get("variant", cfg.variant),
    )


def seeded(base: RunConfig, seed: int) -> RunConfig:
    """``base`` with every seeded part at ``seed`` (the split, the training, the search,
    the blend's user sample, the maps' initialisation), so seeds are independent
    repetitions; bench/ablation_served.py repeats runs with it."""
    return replace(
        base,
        data=replace(base.data, seed=seed),
        train=replace(base.train, seed=seed),
        tune=replace(base.tune, seed=seed),
        blend=replace(base.blend, seed=seed),
        bridge=replace(base.bridge, seed=seed),
    )


def mean_std(per_seed: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    mean: dict[str, Any] = {}
    std: dict[str, Any] = {}
    for d in per_seed[0]:
        mean[d], std[d] = {}, {}
        for s in per_seed[0][d]:
            mean[d][s], std[d][s] = {}, {}
            for k in per_seed[0][d][s]:
                vals = [r[d][s][k] for r in per_seed if r[d].get(s, {}).get(k) is not None]
                mean[d][s][k] = float(np.mean(vals)) if vals else None
                std[d][s][k] = float(np.std(vals)) if len(vals) > 1 else None
    return mean, std


def degree_plot(mean: dict[str, Any], domain: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    buckets = ["deg_0", "deg_1-5", "deg_6-20", "deg_>20"]
    fig, ax = plt.subplots(figsize=(6, 4))
    for m in ("micrec", "inmo", "content-knn"):
        if m in mean and domain in mean[m]:
            ys = [mean[m][domain].get(b, {}).get("ndcg@20") for b in buckets]
            ax.plot(
                buckets, [100 * y if y is not None else np.nan for y in ys], marker="o", label=m
            )
    ax.set_xlabel("item training degree")
    ax.set_ylabel("NDCG@20 (%)")
    ax.set_title(f"{domain}: NDCG@20 by item degree")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", type=Path, default=Path("../shared/datasets/amazon-arts-office"))
    ap.add_argument(
        "--config", type=Path, default=None, help="run config TOML (defaults otherwise)"
    )
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--methods", default=DEFAULT_METHODS)
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--patience", type=int, default=None)
    ap.add_argument("--sparsify", default=None, help="DOMAIN=SHARE applied to every run")
    ap.add_argument("--k-core", type=int, default=None, help="[data] k_core of every run")
    ap.add_argument(
        "--overlap-ratio",
        type=float,
        default=None,
        help="[data] overlap_ratio of every run: the share of users that keep every domain",
    )
    ap.add_argument(
        "--sparsify-sweep", default=None, help="DOMAIN:1.0,0.5,0.3,0.1 -> micrec vs inmo gain plot"
    )
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a [model] key of the config for every trained method (TOML value, "
        "e.g. --set gamma_init=0.0); repeatable",
    )
    ap.add_argument(
        "--merge",
        action="append",
        default=[],
        metavar="RESULTS_JSON",
        help="add the methods of another run's results.json (same seeds) to the tables",
    )
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--progress", action="store_true")
    ap.add_argument(
        "--resume",
        action="store_true",
        help="keep the (method, seed) runs and sweep points already in OUT/results.json",
    )
    ap.add_argument(
        "--combine",
        nargs="+",
        type=Path,
        default=[],
        metavar="RESULTS_JSON",
        help="take the runs of --seeds from these results.json files (seeds run in separate "
        "processes), then write the tables as --report-only does",
    )
    ap.add_argument(
        "--report-only",
        action="store_true",
        help="train nothing: rewrite the tables and plots from OUT/results.json (implies --resume)",
    )
    args = ap.parse_args(argv)
    args.report_only = args.report_only or bool(args.combine)
    args.resume = args.resume or args.report_only
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    set_threads(args.threads)
    overrides: dict[str, dict[str, Any]] = {"train": {}}
    if args.epochs:
        overrides["train"]["epochs"] = args.epochs
    if args.patience:
        overrides["train"]["patience"] = args.patience
    if args.sparsify:
        d, share = args.sparsify.split("=")
        overrides["data"] = {"sparsify": {d: float(share)}}
    if args.k_core is not None:
        overrides.setdefault("data", {})["k_core"] = args.k_core
    if args.overlap_ratio is not None:
        overrides.setdefault("data", {})["overlap_ratio"] = args.overlap_ratio
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            ap.error(f"--set {item!r}: expected KEY=VALUE")
        try:
            parsed = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            parsed = value  # a bare string such as --set item_content_weight=degree
        overrides.setdefault("model", {})[key.strip()] = parsed
    base = load_run_config(args.config, overrides)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [
        m
        for m in methods
        if m not in ABLATIONS
        and m not in SERVED
        and m not in ("popular", "content-knn", "lightgcn", "micrec-no-blend")
    ]
    if unknown:
        ap.error(f"unknown methods {unknown}")
    args.out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    dataset = load_dataset(args.dataset, min_rating=base.data.min_rating)
    loaded: list[Any] = []

    def features() -> Any:
        """The content features, encoded (or read from the cache) once something trains:
        a report of finished runs never touches the encoders."""
        if not loaded:
            loaded.append(
                load_features(dataset, replace(base, variant="micrec"), progress=args.progress)
            )
        return loaded[0]

    per_seed: dict[str, list[dict[str, Any]]] = {m: [] for m in methods}
    infos: dict[str, list[dict[str, Any]]] = {m: [] for m in methods}
    sweep: dict[str, Any] = {}
    previous = args.out / "results.json"
    if args.resume and previous.exists() and not args.combine:
        # A multi-hour run can be extended (more methods) or continued after an
        # interruption; runs are only reused for the same seed order.
        old = json.loads(previous.read_text())
        if old.get("seeds", args.seeds) != args.seeds:
            ap.error(f"--resume: {previous} was run with seeds {old.get('seeds')}")
        for m in methods:
            per_seed[m] = old.get("per_seed", {}).get(m, [])
            infos[m] = old.get("train", {}).get(m, [])
        sweep = old.get("sparsify_sweep", {})
    if args.combine:
        try:
            per_seed, infos = combine(args.combine, args.seeds, methods, base.to_dict())
        except ValueError as e:
            ap.error(f"--combine: {e}")

    def checkpoint() -> None:
        previous.write_text(
            json.dumps(
                {
                    "seeds": args.seeds,
                    "per_seed": per_seed,
                    "train": infos,
                    "sparsify_sweep": sweep,
                },
                indent=1,
            )
        )

    for i, seed in enumerate(args.seeds):
        todo = [m for m in methods if len(per_seed[m]) <= i and not args.report_only]
        if not todo:  # a report of runs already made needs no split
            continue
        cfg = seeded(base, seed)
        split = restrict(build_split(dataset, cfg.data), cfg.domains)
        for m in todo:
            log.info("seed %d: %s", seed, m)
            res, info = run_method(m, cfg, split, features(), progress=args.progress)
            per_seed[m].append(res)
            infos[m].append(info)
            log.info(
                "seed %d %s: %s",
                seed,
                m,
                {d: r.get("all", {}).get("ndcg@20") for d, r in res.items()},
            )
            checkpoint()
    if args.sparsify_sweep:
        dom, shares = args.sparsify_sweep.split(":")
        for share in [float(s) for s in shares.split(",")]:
            done = sweep.get(str(share), {})
            if all(m in done for m in ("inmo", "micrec")) or args.report_only:
                continue
            if share == 1.0 and "inmo" in per_seed and "micrec" in per_seed:
                # the unsparsified point is the seed-0 run of the main table
                sweep[str(share)] = {m: per_seed[m][0][dom] for m in ("inmo", "micrec")}
                continue
            cfg = replace(base, data=replace(base.data, sparsify={dom: share}))
            split = restrict(build_split(dataset, cfg.data), cfg.domains)
            row = dict(done)  # a point kept from a resumed run only re-runs what is missing
            for m in ("inmo", "micrec"):
                if m in row:
                    continue
                res, _ = run_method(m, cfg, split, features(), progress=args.progress)
                row[m] = res[dom]
            sweep[str(share)] = row
            checkpoint()
            log.info("sparsify %s=%s: %s", dom, share, {m: row[m]["all"]["ndcg@20"] for m in row})
    for other in args.merge:
        # runs made by another process (e.g. ablations run in parallel into another folder)
        extra = json.loads(Path(other).read_text())
        if extra.get("seeds", args.seeds) != args.seeds:
            ap.error(f"--merge: {other} was run with seeds {extra.get('seeds')}")
        for m, rows in extra.get("per_seed", {}).items():
            if rows and not per_seed.get(m):
                per_seed[m] = rows
                infos[m] = extra.get("train", {}).get(m, [])
                methods.append(m)
    summary = {
        m: mean_std(per_seed[m]) for m in methods if per_seed[m] and all(per_seed[m][0].values())
    }
    mean = {m: s[0] for m, s in summary.items()}
    std = {m: s[1] for m, s in summary.items()}
    elapsed = time.perf_counter() - t_start
    meta = {
        "command": "python " + " ".join(sys.argv),
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine(),
        "git": git_commit(),
        "seconds": elapsed,
        "config": base.to_dict(),
    }
    (args.out / "results.json").write_text(
        json.dumps(
            {
                "meta": meta,
                "seeds": args.seeds,
                "mean": mean,
                "std": std,
                "per_seed": per_seed,
                "train": infos,
                "sparsify_sweep": sweep,
            },
            indent=1,
        )
    )
    train_minutes = sum(r.get("train_seconds", 0) for rows in infos.values() for r in rows) / 60
    seeds_done = ", ".join(f"{m} {len(per_seed[m])}" for m in methods)
    md = [
        f"# Quality: {args.dataset.name}\n",
        f"Command: `{meta['command']}`  \nDate: {meta['date']}; machine: {meta['machine']}; "
        f"git {meta['git']}; training time (sum over runs) {train_minutes:.1f} min. "
        f"Seeds per method: {seeds_done}. Values in %, mean ± std over seeds.\n",
    ]
    for d in sorted(next(iter(mean.values()))):
        md.append(markdown_table(mean, d, spreads=std))
        md.append(coverage_table(mean, d, k=20, spreads=std))
        if "micrec" in mean:
            md.append(targets_table(mean, std, d))
        bar_chart(
            mean,
            d,
            args.out / f"slices_{d}.png",
            title=f"{args.dataset.name} / {d}: NDCG@20 per slice",
        )
        degree_plot(mean, d, args.out / f"degree_{d}.png")
    md.append("\n## Training\n\n| method | best epoch | s/epoch | peak MB |\n|---|---|---|---|")
    for m, rows in infos.items():
        if rows and rows[0]:
            md.append(
                f"| {m} | {np.mean([r.get('best_epoch', 0) for r in rows]):.0f} | "
                f"{np.mean([r.get('seconds_per_epoch', 0) for r in rows]):.2f} | {max(r.get('peak_memory_mb', 0) for r in rows):.0f} |"
            )
    if sweep:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        shares = sorted(sweep, key=float, reverse=True)
        # micrec first, then any variant measured at every share (e.g. gamma-init-0)
        common = set.intersection(*(set(sweep[s]) for s in shares))
        variants = ["micrec", *sorted(k for k in common if k not in ("inmo", "micrec"))]
        md.append("\n## Sparsify sweep (target domain NDCG@20 %, seed 0)\n")
        md.append(
            "| share kept | slice | INMO | "
            + " | ".join(f"{v} | {v} - INMO" for v in variants)
            + " |\n|---|---|---|"
            + "---|---|" * len(variants)
        )
        gains: dict[str, list[float]] = {v: [] for v in variants}
        for s in shares:
            for sl in ("all", "new_items", "cold_items", "cd_cold_users"):
                i = sweep[s]["inmo"].get(sl, {}).get("ndcg@20")
                vals = [sweep[s][v].get(sl, {}).get("ndcg@20") for v in variants]
                if i is None or any(v is None for v in vals):
                    continue
                if sl == "all":
                    for v, m in zip(variants, vals, strict=True):
                        gains[v].append(100 * (m - i))
                cells = " | ".join(f"{100 * m:.2f} | {100 * (m - i):+.2f}" for m in vals)
                md.append(f"| {s} | {sl} | {100 * i:.2f} | {cells} |")
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for v in variants:
            ax.plot([float(s) for s in shares], gains[v], marker="o", label=v)
        ax.axhline(0.0, color="grey", lw=0.8)
        ax.invert_xaxis()
        ax.set_xlabel("share of target-domain training data kept")
        ax.set_ylabel("method - INMO, NDCG@20 all (points)")
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.out / "sparsify_gain.png", dpi=110)
        plt.close(fig)
    (args.out / "results.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
