"""``micrec demo build``: the embedded demo bundle (synthetic catalogue -> MICRec).

Writes the synthetic catalogue (if missing), trains MICRec with configs/demo.toml
defaults and writes the bundle ``make run`` serves. Idempotent: an existing bundle is kept
unless ``--force``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger("micrec.demo")
# small budget so `make run` is ready in minutes on 2 cores (lr 5e-3 converges in ~15
# epochs on the synthetic catalogue: tests/model/test_quality_synth.py)
DEMO_TRAIN = {"epochs": 20, "patience": 5, "batch_size": 1024, "lr": 0.005}
# the smallest search that still contains the given config and INMO (model.tuning)
DEMO_TUNE = {"trials": 2, "blend_trials": 12}
DEMO_BLEND = {"trials": 20, "max_users": 500}


def build_demo(
    out: Path, data: Path, *, config: Path | None = None, force: bool = False, progress: bool = True
) -> Path:
    from model.data.synth import SynthConfig, write_synthetic_catalogue
    from model.pipeline import train_run
    from model.runconfig import load_run_config

    if (out / "manifest.json").is_file() and not force:
        log.info("bundle %s exists (use --force to rebuild)", out)
        return out
    if not (data / "interactions.csv").is_file():
        log.info("writing the synthetic demo catalogue to %s", data)
        write_synthetic_catalogue(data, SynthConfig())
    cfg = load_run_config(
        config,
        None
        if config
        else {"train": dict(DEMO_TRAIN), "tune": dict(DEMO_TUNE), "blend": dict(DEMO_BLEND)},
    )  # ConfigError: one line from model.commands.runner
    run = train_run(data, cfg, out, progress=progress)
    log.info(
        "demo bundle %s: best epoch %d, val NDCG@20 %.4f",
        out,
        run.result.best_epoch,
        run.result.best_val,
    )
    return out


def _build(args: argparse.Namespace) -> int:
    path = build_demo(
        args.out, args.data, config=args.config, force=args.force, progress=not args.quiet
    )
    print(f"demo bundle: {path}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the embedded demo (synthetic catalogue + MICRec bundle)")
    verbs = p.add_subparsers(dest="demo_command", required=True)
    b = verbs.add_parser("build", help="write the synthetic catalogue and train the demo bundle")
    b.add_argument("--out", type=Path, default=Path("artifacts/demo-bundle"))
    b.add_argument("--data", type=Path, default=Path("artifacts/demo-data"))
    b.add_argument(
        "--config", type=Path, default=None, help="run config TOML (default: demo budget)"
    )
    b.add_argument("--force", action="store_true", help="rebuild even if the bundle exists")
    b.add_argument("--quiet", action="store_true")
    b.set_defaults(handler=_build)
