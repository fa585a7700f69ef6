"""``micrec data stats`` and ``micrec data split``.

``micrec data stats DATASET`` prints a per-domain table (users, items, interactions,
density, overlapping users, user/item degree quantiles).

``micrec data split DATASET --out DIR`` builds the seeded inductive split, saves it
(``model.data.splitio.save_split``), prints its slice sizes and, with ``--export DIR``,
writes the plain CSV / INMO-format export.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from model.commands.runner import UserError
from model.data.filtering import k_core
from model.data.loading import load_dataset
from model.data.split import SplitConfig, build_split
from model.data.splitio import export_split, save_split, slice_sizes
from model.data.stats import dataset_stats, format_slice_table, format_stats_table

log = logging.getLogger(__name__)


def _share(text: str) -> tuple[str, float]:
    """Parse ``DOMAIN=SHARE`` of ``--sparsify``."""
    domain, sep, value = text.partition("=")
    try:
        share = float(value)
    except ValueError:
        share = float("nan")
    if not sep or not domain or not 0.0 <= share <= 1.0:
        raise argparse.ArgumentTypeError(
            f"expected DOMAIN=SHARE with SHARE in [0, 1] (e.g. office=0.3), got {text!r}"
        )
    return domain, share


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("stats", help="per-domain sizes, density, overlap, degree quantiles")
    p.add_argument("dataset", help="dataset folder (interactions.csv + items.csv)")
    p.add_argument("--min-rating", type=float, default=None, help="keep rating >= this")
    p.add_argument(
        "--k-core", type=int, default=0, help="describe the per-domain k-core (default: raw)"
    )
    p.set_defaults(handler=cmd_stats)

    p = sub.add_parser("split", help="build, save (and export) the seeded inductive split")
    p.add_argument("dataset", help="dataset folder (interactions.csv + items.csv)")
    p.add_argument("--out", required=True, help="folder to save the split in")
    d = SplitConfig()
    p.add_argument("--seed", type=int, default=d.seed, help=f"split seed (default {d.seed})")
    p.add_argument("--k-core", type=int, default=d.k_core, help=f"default {d.k_core}")
    p.add_argument(
        "--new-ratio",
        type=float,
        default=d.new_ratio,
        help=f"new users/items share ({d.new_ratio})",
    )
    p.add_argument(
        "--overlap-ratio",
        type=float,
        default=d.overlap_ratio,
        help=f"share of multi-domain users keeping all domains ({d.overlap_ratio})",
    )
    p.add_argument(
        "--sparsify",
        type=_share,
        action="append",
        default=[],
        metavar="DOMAIN=SHARE",
        help="keep only SHARE of DOMAIN's training pairs (repeatable)",
    )
    p.add_argument("--min-rating", type=float, default=None, help="keep rating >= this")
    p.add_argument("--export", default=None, help="also write the plain CSV/INMO export here")
    p.set_defaults(handler=cmd_split)


def cmd_stats(args: argparse.Namespace) -> int:
    dataset = load_dataset(args.dataset, min_rating=args.min_rating)
    inter = k_core(dataset.interactions, args.k_core) if args.k_core > 1 else None
    title = dataset.name + (f" ({args.k_core}-core per domain)" if inter is not None else "")
    print(title)
    print(format_stats_table(dataset_stats(dataset, inter)))
    return 0


def cmd_split(args: argparse.Namespace) -> int:
    config = SplitConfig(
        seed=args.seed,
        k_core=args.k_core,
        min_rating=args.min_rating,
        new_ratio=args.new_ratio,
        overlap_ratio=args.overlap_ratio,
        sparsify=dict(args.sparsify),
    )
    try:
        config.validate()
    except ValueError as err:
        raise UserError(str(err)) from None
    for opt, folder in (("--out", args.out), ("--export", args.export)):
        if folder and Path(folder).exists() and not Path(folder).is_dir():
            raise UserError(f"{opt} {folder} exists and is not a folder")
    t0 = time.perf_counter()
    dataset = load_dataset(args.dataset)
    unknown = sorted(set(config.sparsify) - set(dataset.domains))
    if unknown:
        raise UserError(
            f"--sparsify names unknown domain(s) {', '.join(unknown)}; "
            f"{dataset.name} has {', '.join(dataset.domains)}"
        )
    if config.min_rating is not None and dataset.interactions.rating is None:
        raise UserError(f"--min-rating needs a rating column; {dataset.name} has none")
    split = build_split(dataset, config)
    try:
        out = save_split(split, args.out)
    except ValueError as err:  # a domain name that cannot be a folder name
        raise UserError(str(err)) from None
    log.info("split built and saved to %s in %.1f s", out, time.perf_counter() - t0)
    print(f"{dataset.name}: seed {config.seed}, {config.k_core}-core, saved to {out}")
    print(format_slice_table(slice_sizes(split)))
    if args.export:
        print(f"exported to {export_split(split, args.export)}")
    return 0
