"""``micrec evaluate BUNDLE``: every slice of docs/evaluation.md at K = 10, 20, 50, and
catalogue coverage@20 / long-tail share@20 per domain (model.evaluation)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from model.commands.runner import UserError
from model.runconfig import ConfigError


def _handler(args: argparse.Namespace) -> int:
    from model.bundle import BundleError
    from model.pipeline import evaluate_bundle
    from model.reporting import bar_chart, coverage_table, markdown_table

    try:
        results = evaluate_bundle(
            args.bundle, dataset_dir=args.dataset, baselines=args.baselines, progress=not args.quiet
        )
    except ConfigError:
        raise  # one line from model.commands.runner (e.g. [data] domains not in --dataset)
    except (BundleError, ValueError) as err:
        raise UserError(str(err)) from err
    out = Path(args.out or Path(args.bundle) / "evaluation")
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    domains = list(next(iter(results.values())))
    md = ["# Evaluation\n", f"bundle: `{args.bundle}`\n"]
    for d in domains:
        md.append(
            markdown_table(results, d, metrics=("ndcg@20", "recall@20", "ndcg@10", "recall@50"))
        )
        md.append(coverage_table(results, d, k=20))
        bar_chart(results, d, out / f"slices_{d}.png")
    (out / "results.md").write_text("\n".join(md))
    print("\n".join(md))
    print(f"wrote {out}/results.json, results.md, slices_<domain>.png")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="evaluate a bundle on every slice (full ranking)")
    p.add_argument("bundle", type=Path, help="bundle directory")
    p.add_argument(
        "--dataset", type=Path, default=None, help="dataset folder (default: the one recorded)"
    )
    p.add_argument(
        "--out", type=Path, default=None, help="output folder (default BUNDLE/evaluation)"
    )
    p.add_argument("--baselines", action="store_true", help="also popular and content kNN")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(handler=_handler)
