"""Ablations of the served default: the configuration the search chose, trained once per
row with one group of parts turned off, every slice, seed by seed.

    # the rows of one seed, from the full run of `bench/quality.py --methods micrec`
    # whose search chose the configuration (its results.json, the seed's index in it)
    python bench/ablation_served.py run --from RUN/results.json --seed-index 0 --seed 0 \
        --dataset ../shared/datasets/amazon-arts-office [--sparsify office=0.1] \
        [--k-core 2] [--lr LR] --label arts-office --rows no-content,no-transfer,inmo-blend \
        --threads 1 --out docs/results/ablation/served
    # the served row from an earlier run of the same recipe (chosen trial, trained once)
    python bench/ablation_served.py import --from RUN/results.json --seed-index 0 --seed 0 \
        --label arts-office --out docs/results/ablation/served
    # the tables from every run under --out
    python bench/ablation_served.py report --out docs/results/ablation/served \
        > docs/results/ablation/served/tables.md

Every row starts from the chosen trial's ``[model]`` keys and learning rate (``--lr``, or
read from the run's trials), is trained once (``[tune] trials = 1``) and goes through
the served recipe (model.pipeline.fit_served_model via bench/quality.py's ``micrec``),
so the blend, its cross-domain rule and the maps are fitted on validation per row.
A row whose configuration equals the served one (the search had already turned those
parts off) or another row's is not trained again: it is recorded as that row's numbers,
marked.
Runs land in OUT/runs/LABEL-sSEED-ROW.json; ``report`` prints the tables (mean +- std
over seeds per row and slice, and each row over the served row on the same seeds) as
markdown: ``> OUT/tables.md``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from machine import git_commit
from quality import run_method, seeded, with_overrides

from model.commands.runner import set_threads
from model.data.loading import load_dataset
from model.data.split import build_split
from model.pipeline import load_features, restrict
from model.runconfig import RunConfig, load_run_config

log = logging.getLogger("bench.ablation_served")
ROWS: dict[str, dict[str, dict[str, Any]]] = {
    "served": {},
    # no item text or image anywhere: the graph's modality aggregation, the content ->
    # collaborative item map, the blend's content part (the run gets no features at all,
    # as on a data set without content)
    "no-content": {"model": {"modalities": ()}, "features": {"none": True}},
    # content kept everywhere but in the graph (the modality-based aggregation alone)
    "no-content-graph": {"model": {"modalities": ()}},
    # cold items without the trained content -> collaborative map (content kNN's part of
    # the blend stays)
    "no-item-map": {"item_map": {"enabled": False}},
    # the blend without its content part (the content similarity of a user's profile)
    "no-blend-content": {"blend": {"content_dim": 0}},
    # no trained cross-domain transfer: no contrastive alignment in the graph, no
    # cross-domain map, no co-purchase boost, no other-domain profile mix (users new to a
    # domain get the rule validation picks among the untrained ones)
    "no-transfer": {
        "model": {"cross_domain_weight": 0.0},
        "bridge": {"enabled": False},
        "blend": {"copurchase": False, "copurchase_warm": False, "profile_other": (0.0,)},
    },
    # one cross-domain part at a time: the graph's contrastive alignment, the trained
    # cross-domain map, the co-purchase boost (both kinds), the other-domain profile mix
    "no-alignment": {"model": {"cross_domain_weight": 0.0}},
    "no-bridge": {"bridge": {"enabled": False}},
    "no-copurchase": {"blend": {"copurchase": False, "copurchase_warm": False}},
    "no-profile-mix": {"blend": {"profile_other": (0.0,)}},
    # INMO's backbone (no content in the graph, no alignment) with every served part after it
    "inmo-blend": {"model": {"modalities": (), "cross_domain_weight": 0.0}},
    # probes of a part that is off by default, added to the chosen trial: the backbone's
    # hidden-history transfer loss (model.nn.config.MICRecConfig.transfer_weight)
    "plus-transfer-0.02": {"model": {"transfer_weight": 0.02}},
    "plus-transfer-0.1": {"model": {"transfer_weight": 0.1}},
    "plus-transfer-0.5": {"model": {"transfer_weight": 0.5}},
}
"""Row name -> the run-config sections it overrides on top of the chosen trial."""
SLICES = ("all", "new_users", "cd_cold_users", "cold_items", "cold_items_vs_all", "deg_1-5")
VAL_SLICES = ("all", "cd_pseudo_cold")
"""Validation slices shown next to the test ones: does validation see what test shows?"""
NAMES = {
    "all": "all",
    "new_users": "new to the system",
    "cd_cold_users": "new to the domain",
    "cold_items": "cold items",
    "cold_items_vs_all": "cold items among all",
    "deg_1-5": "items with 1-5",
    "cd_pseudo_cold": "pseudo-cold users (new to the domain)",
}


def chosen_trial(run: dict[str, Any], index: int, lr: float | None) -> tuple[dict[str, Any], float]:
    """The chosen trial's ``[model]`` keys (without the cross-domain rule, which the blend
    fit chooses again) and its learning rate (matched among the run's trials)."""
    info = run["train"]["micrec"][index]
    model = {k: v for k, v in info["chosen_config"].items() if k != "cross_domain_rule"}
    if lr is not None:
        return model, lr
    keys = ("cross_domain_weight", "temperature", "drop_interaction")
    hits = [
        t["params"]["lr"]
        for t in info.get("tuning_trials") or []
        if "lr" in t.get("params", {})
        and all(abs(t["params"].get(k, model[k]) - model[k]) < 1e-12 for k in keys)
    ]
    if len(set(hits)) != 1:
        raise SystemExit(f"the chosen trial's lr is not in the run's trials ({hits}): give --lr")
    return model, hits[0]


def row_config(cfg: RunConfig, row: str) -> RunConfig:
    return with_overrides(cfg, ROWS[row])  # its "features" entry is read by ``run``


def run(args: argparse.Namespace) -> None:
    set_threads(args.threads)
    prior = json.loads(args.src.read_text())
    model_keys, lr = chosen_trial(prior, args.seed_index, args.lr)
    over: dict[str, dict[str, Any]] = {
        "model": model_keys,
        "train": {"lr": lr},
        "tune": {"trials": 1},
    }
    if args.sparsify:
        dom, share = args.sparsify.split("=")
        over["data"] = {"sparsify": {dom: float(share)}}
    if args.k_core is not None:
        over.setdefault("data", {})["k_core"] = args.k_core
    cfg = seeded(load_run_config(args.config, over), args.seed)
    dataset = load_dataset(args.dataset, min_rating=cfg.data.min_rating)
    features = load_features(dataset, replace(cfg, variant="micrec"), progress=False)
    split = restrict(build_split(dataset, cfg.data), cfg.domains)
    (args.out / "runs").mkdir(parents=True, exist_ok=True)
    # configurations already scored (the chosen one is the served row's, run or imported)
    known: dict[str, tuple[RunConfig, bool]] = {"served": (cfg, features is None)}
    for row in args.rows.split(","):
        row_cfg = row_config(cfg, row)
        no_features = "none" in ROWS[row].get("features", {}) or features is None
        twin = next((k for k, v in known.items() if v == (row_cfg, no_features) and k != row), None)
        record: dict[str, Any] = {
            "label": args.label,
            "seed": args.seed,
            "row": row,
            "dataset": str(args.dataset),
            "sparsify": args.sparsify,
            "k_core": cfg.data.k_core,
            "from": str(args.src),
            "lr": lr,
            "overrides": ROWS[row],
        }
        if twin is not None:
            record["same_as"] = twin
            log.info("%s seed %d %s: the configuration of %s", args.label, args.seed, row, twin)
        else:
            known[row] = (row_cfg, no_features)
            t0 = time.perf_counter()
            load = os.getloadavg()[0]
            res, info = run_method(
                "micrec", row_cfg, split, None if no_features else features, progress=False
            )
            record.update(
                results=res,
                info=info,
                seconds=time.perf_counter() - t0,
                machine=f"{os.cpu_count()} cores, {args.threads} thread(s), load {load:.1f}",
                git=git_commit(),
            )
            log.info(
                "%s seed %d %s: all %s",
                args.label,
                args.seed,
                row,
                {d: round(100 * r["all"]["ndcg@20"], 2) for d, r in res.items()},
            )
        path = args.out / "runs" / f"{args.label}-s{args.seed}-{row}.json"
        path.write_text(json.dumps(record, indent=1))


def import_served(args: argparse.Namespace) -> None:
    prior = json.loads(args.src.read_text())
    (args.out / "runs").mkdir(parents=True, exist_ok=True)
    record = {
        "label": args.label,
        "seed": args.seed,
        "row": "served",
        "from": str(args.src),
        "imported": True,
        "results": prior["per_seed"]["micrec"][args.seed_index],
        "info": prior["train"]["micrec"][args.seed_index],
    }
    path = args.out / "runs" / f"{args.label}-s{args.seed}-served.json"
    path.write_text(json.dumps(record, indent=1))


def collect(out: Path) -> dict[str, dict[int, dict[str, dict[str, Any]]]]:
    """label -> seed -> row -> results (rows equal to served resolved to its numbers)."""
    runs: dict[str, dict[int, dict[str, Any]]] = {}
    for f in sorted((out / "runs").glob("*.json")):
        r = json.loads(f.read_text())
        runs.setdefault(r["label"], {}).setdefault(int(r["seed"]), {})[r["row"]] = r
    table: dict[str, dict[int, dict[str, dict[str, Any]]]] = {}
    for label, seeds in runs.items():
        for seed, rows in seeds.items():
            for row, r in rows.items():
                src = rows.get(r["same_as"]) if r.get("same_as") else r
                if src is not None and "results" in src:
                    entry = {
                        "results": src["results"],
                        "val": src.get("info", {}).get("val"),
                        "same": r.get("same_as"),
                    }
                    table.setdefault(label, {}).setdefault(seed, {})[row] = entry
    return table


def report(args: argparse.Namespace) -> None:
    table = collect(args.out)
    lines: list[str] = []
    ratios: dict[str, dict[str, list[float]]] = {}  # "label / domain" -> row -> per slice
    for label, seeds in table.items():
        domains = list(next(iter(seeds.values()))["served"]["results"])
        lines += [f"## {label} (seeds {', '.join(str(s) for s in sorted(seeds))})", ""]
        for dom in domains:
            lines += [f"**{dom}** (test NDCG@20 %, mean +- std over seeds; x served)", ""]
            head = [NAMES[s] for s in SLICES] + [
                f"validation: {NAMES[s]} [seeds]" for s in VAL_SLICES
            ]
            lines.append("| row | " + " | ".join(head) + " |")
            lines.append("|---" * (len(head) + 1) + "|")
            panel = ratios.setdefault(f"{label} / {dom}", {})
            for row in ROWS:
                vals = _values(seeds, row, dom, row)
                served = _values(seeds, "served", dom, row)  # the same seeds as the row
                if not vals["all"]:
                    continue
                twins = [seeds[s][row]["same"] for s in sorted(seeds) if row in seeds[s]]
                name = row + "".join(
                    f" ({twins.count(t)} of {len(twins)} = {t})"
                    for t in sorted(set(twins) - {None})
                )
                cells, panel[row] = [], []
                for s in SLICES:
                    v = vals[s]
                    ratio = float("nan")
                    if not v or any(x is None for x in v):
                        cells.append("n/a")
                        panel[row].append(ratio)
                        continue
                    cell = f"{np.mean(v):.2f} +- {np.std(v):.2f}"
                    if served[s] and np.mean(served[s]) > 0:
                        ratio = float(np.mean(v) / np.mean(served[s]))  # means of the same seeds
                        if row != "served":
                            cell += f" ({ratio:.2f})"
                    cells.append(cell)
                    panel[row].append(ratio)
                lines.append(
                    f"| {name} | " + " | ".join(cells + _val_cells(seeds, row, dom)) + " |"
                )
            lines.append("")
    rows = tuple(args.summary_rows.split(","))
    sys.stdout.write("\n".join(summary(ratios, rows) + lines) + "\n")
    if args.plot:
        heatmaps(ratios, args.plot)


SUMMARY_ROWS = ("no-content", "no-transfer", "inmo-blend")
"""The rows the summary compares with served: the seed paper's parts and INMO + blend."""
SUMMARY_SLICES = ("all", "cd_cold_users", "cold_items_vs_all", "deg_1-5")


def summary(
    ratios: dict[str, dict[str, list[float]]], rows: tuple[str, ...] = SUMMARY_ROWS
) -> list[str]:
    """One line per data set and domain: each of ``rows`` over served on the key slices."""
    head = [f"{r}: {NAMES[s]}" for r in rows for s in SUMMARY_SLICES]
    lines = [
        "## Summary: row / served, test NDCG@20 (means over the same seeds)",
        "",
        "| data / domain | " + " | ".join(head) + " |",
        "|---" * (len(head) + 1) + "|",
    ]
    for key, panel in ratios.items():
        cells = []
        for r in rows:
            for s in SUMMARY_SLICES:
                v = panel.get(r, [float("nan")] * len(SLICES))[SLICES.index(s)]
                cells.append("n/a" if np.isnan(v) else f"{v:.2f}")
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def heatmaps(ratios: dict[str, dict[str, list[float]]], path: Path) -> None:
    """One panel per data set and domain: each row's NDCG@20 over the served row's, per
    slice (blue: the part helps, i.e. removing it loses; red: removing it gains)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = list(ratios)
    cols = 2
    rows_n = (len(panels) + cols - 1) // cols
    height = 1.6 + 0.38 * max(len(r) for r in ratios.values())
    fig, axes = plt.subplots(
        rows_n, cols, figsize=(13, height * rows_n), squeeze=False, layout="constrained"
    )
    for ax, key in zip(axes.flat, panels, strict=False):
        names = [r for r in ratios[key] if r != "served"]
        grid = np.array([ratios[key][r] for r in names], dtype=float)
        im = ax.imshow(
            np.log2(np.clip(grid, 1e-3, None)),
            cmap="coolwarm_r",
            vmin=-0.5,
            vmax=0.5,
            aspect="auto",
        )
        ax.set_xticks(range(len(SLICES)), [NAMES[s] for s in SLICES], rotation=30, ha="right")
        ax.set_yticks(range(len(names)), names)
        for (i, j), v in np.ndenumerate(grid):
            ax.text(
                j, i, "n/a" if np.isnan(v) else f"{v:.2f}", ha="center", va="center", fontsize=7
            )
        ax.set_title(f"{key}: row / served (test NDCG@20)", fontsize=9)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.6, label="log2(row / served)")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def _val_cells(seeds: dict[int, dict[str, Any]], row: str, dom: str) -> list[str]:
    """The validation columns: the row's mean and its ratio to served, same seeds."""
    vals = _values(seeds, row, dom, row, "val", VAL_SLICES)
    served = _values(seeds, "served", dom, row, "val", VAL_SLICES)
    cells = []
    for s in VAL_SLICES:
        v, b = vals[s], served[s]
        if not v or any(x is None for x in v + b):
            cells.append("n/a")
            continue
        ratio = f" ({np.mean(v) / np.mean(b):.2f})" if row != "served" and np.mean(b) > 0 else ""
        # rows scored before validation was recorded have fewer seeds here than on test
        cells.append(f"{np.mean(v):.2f}{ratio} [{len(v)}]")
    return cells


def _values(
    seeds: dict[int, dict[str, Any]],
    row: str,
    dom: str,
    paired: str,
    stage: str = "results",
    slices: tuple[str, ...] = SLICES,
) -> dict[str, list[Any]]:
    """Per slice, ``row``'s NDCG@20 (%) on test (``stage="results"``) or validation
    (``"val"``) over the seeds where ``paired`` and served both have that stage."""
    out: dict[str, list[Any]] = {s: [] for s in slices}
    for seed in sorted(seeds):
        runs = seeds[seed]
        if any(runs.get(r, {}).get(stage) is None for r in (paired, "served")):
            continue
        res = runs[row][stage][dom]
        for s in slices:
            v = res.get(s, {}).get("ndcg@20")
            out[s].append(None if v is None else 100 * v)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--dataset", type=Path, required=True)
    r.add_argument("--config", type=Path, default=Path("configs/bench-quality.toml"))
    r.add_argument("--sparsify", default=None, help="DOMAIN=SHARE, as the full run had it")
    r.add_argument("--k-core", type=int, default=None)
    r.add_argument("--lr", type=float, default=None, help="the chosen trial's learning rate")
    r.add_argument("--rows", default="no-content,no-transfer,inmo-blend")
    r.add_argument("--threads", type=int, default=1)
    i = sub.add_parser("import")
    for p in (r, i):
        p.add_argument("--from", dest="src", type=Path, required=True)
        p.add_argument("--seed-index", type=int, default=0)
        p.add_argument("--seed", type=int, required=True)
        p.add_argument("--label", required=True)
    rep = sub.add_parser("report")
    rep.add_argument("--plot", type=Path, default=None, help="a PNG of every row / served")
    rep.add_argument(
        "--summary-rows",
        default=",".join(SUMMARY_ROWS),
        help="the rows of the summary table (comma-separated)",
    )
    for p in (r, i, rep):
        p.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    if args.cmd in ("run", "report"):
        given = args.rows if args.cmd == "run" else args.summary_rows
        unknown = [x for x in given.split(",") if x not in ROWS]
        if unknown:
            ap.error(f"unknown rows {unknown}; choose from {sorted(ROWS)}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    {"run": run, "import": import_served, "report": report}[args.cmd](args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
