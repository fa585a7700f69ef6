"""The co-purchase boost's weight for users new to a domain: validation vs test (a probe).

    python bench/cd_cold_boost.py --dataset ../shared/datasets/amazon-arts-office --seed 0 \
        --checkpoint /tmp/ckpt/arts-office-inmo-s0.pt --label arts-office \
        --out docs/results/ablation/copurchase-rerank/weights

``--variants 0:0,1:0.5`` repeats the curve for transitions fitted with other exponents
``ANCHOR_NORM:POP`` (model.nn.copurchase.CoPurchase), one file each
(LABEL-sSEED-aA-pP.json; the fit's weight for a variant is the best validation value
of the fit's grid, as model.copurchasefit chooses it).

On a saved backbone, the ``both_maps_decay_cp`` row of bench/ablation.py (both maps,
content decay, blend with the co-purchase boost fitted on validation), then the boost's
weight of every domain set to each value of a grid (in units of the score spread, as
model.copurchasefit fits it) and NDCG@20 of users new to the domain read on validation
(the pseudo-cold users the fit chooses on) and on test (the real ones): does the weight
validation prefers carry over to test? Writes OUT/LABEL-sSEED.json;
``--report OUT`` prints a markdown table of every file there.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from ablation import probe_arguments, probe_backbone, served_row

from model.copurchasefit import COPURCHASE_GRID
from model.evaluation import PSEUDO_COLD_SLICE, evaluate
from model.nn.copurchase import CoPurchase
from model.rankers import PopularRanker

log = logging.getLogger("cd_cold_boost")
TEST_SLICE = "cd_cold_users"
GRID = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)


def report(folder: Path) -> list[str]:
    """Markdown: per file and domain, validation and test NDCG@20 (%) at each grid value,
    the fit's choice marked with *."""
    head = " | ".join(f"{g:g}" for g in GRID)
    lines = [
        f"| run | domain | set | {head} |",
        "|---|---|---|" + "---:|" * len(GRID),
    ]
    for f in sorted(folder.glob("*.json")):
        r = json.loads(f.read_text())
        for d, chosen in sorted(r["chosen"].items()):
            for stage in ("val", "test"):
                cells = []
                for g in GRID:
                    v = r[stage][f"{g:g}"].get(d)
                    mark = "*" if g == chosen else ""
                    cells.append("-" if v is None else f"{100 * v:.2f}{mark}")
                lines.append(f"| {f.stem} | {d} | {stage} | " + " | ".join(cells) + " |")
    return lines


def summary(folder: Path) -> list[str]:
    """Markdown: per file and domain, test NDCG@20 (%) without the boost and with the
    value validation chose, and most popular's when the run recorded it."""
    lines = [
        "| run | domain | chosen | test, no boost | test, chosen | ratio | most popular "
        "| chosen vs popular |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for f in sorted(folder.glob("*.json")):
        r = json.loads(f.read_text())
        for d, chosen in sorted(r["chosen"].items()):
            zero, best = r["test"]["0"][d], r["test"][f"{chosen:g}"][d]
            pop = r.get("popular_test", {}).get(d)
            vs = "-" if not pop else f"{best / pop:.2f}"
            lines.append(
                f"| {f.stem} | {d} | {chosen:g} | {100 * zero:.2f} | {100 * best:.2f} "
                f"| {best / zero:.3f} | {'-' if pop is None else f'{100 * pop:.2f}'} | {vs} |"
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    if argv is None and len(sys.argv) == 3 and sys.argv[1] == "--report":
        print("\n".join([*report(Path(sys.argv[2])), "", *summary(Path(sys.argv[2]))]))
        return 0
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    probe_arguments(ap)
    ap.add_argument("--variants", default="0:0", help="ANCHOR_NORM:POP,... (default 0:0)")
    args = ap.parse_args(argv)
    cfg, split, features, model = probe_backbone(args)
    ranker, blend, rep, _ = served_row(
        cfg,
        split,
        features,
        model,
        replace(
            cfg.blend,
            cold_prior=False,
            content_decay=True,
            copurchase=True,
            copurchase_warm=False,
            copurchase_pop=(0.0,),
        ),
    )
    units, chosen = {}, {}
    for d, by_type in rep.items():
        fit = by_type.get("cross_domain", {}).get("copurchase")
        if fit is not None:
            units[d] = float(fit["unit"])
            chosen[d] = float(fit["chosen"])
    pop = evaluate(PopularRanker(split), split, ks=(20,), only=[TEST_SLICE])
    base = {d: dict(ws) for d, ws in blend.weights.items()}
    variants = [tuple(float(x) for x in v.split(":")) for v in args.variants.split(",")]
    for anchor_norm, pop_exp in variants:
        assert blend.copurchase is not None
        blend.copurchase = CoPurchase(
            blend.copurchase.top,
            anchor_norm=anchor_norm,
            pop={d: pop_exp for d in split.domains},
        )
        out: dict[str, Any] = {
            "label": args.label,
            "seed": args.seed,
            "machine": f"{os.cpu_count()} cores, {args.threads} thread(s), "
            f"load {os.getloadavg()[0]:.1f}",
            "rule": model.config.cross_domain_rule,
            "anchor_norm": anchor_norm,
            "pop": pop_exp,
            "units": units,
            "chosen": dict(chosen),
            "val": {},
            "test": {},
            "popular_test": {d: pop[d][TEST_SLICE]["ndcg@20"] for d in pop},
        }
        for g in GRID:
            for d, unit in units.items():
                w = base[d]["cross_domain"]
                blend.weights[d]["cross_domain"] = replace(w, copurchase=g * unit)
            # the ranker reads the blend's weights (and transitions) each time it binds
            val = evaluate(ranker, split, ks=(20,), stage="val", only=[PSEUDO_COLD_SLICE])
            test = evaluate(ranker, split, ks=(20,), only=[TEST_SLICE])
            out["val"][f"{g:g}"] = {d: val[d][PSEUDO_COLD_SLICE]["ndcg@20"] for d in val}
            out["test"][f"{g:g}"] = {d: test[d][TEST_SLICE]["ndcg@20"] for d in test}
            log.info(
                "a %g p %g w %g: val %s test %s",
                anchor_norm,
                pop_exp,
                g,
                out["val"][f"{g:g}"],
                out["test"][f"{g:g}"],
            )
        if (anchor_norm, pop_exp) != (0.0, 0.0):  # the fit ran with 0:0; the others as it would
            for d in units:
                curve = {g: out["val"][f"{g:g}"][d] or 0.0 for g in (0.0, *COPURCHASE_GRID)}
                out["chosen"][d] = max(curve, key=lambda g: curve[g])
        tag = "" if (anchor_norm, pop_exp) == (0.0, 0.0) else f"-a{anchor_norm:g}-p{pop_exp:g}"
        path = args.out / f"{args.label}-s{args.seed}{tag}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(out, indent=1, default=float))
    print("\n".join([*report(args.out), "", *summary(args.out)]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
