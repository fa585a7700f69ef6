"""``micrec retrain``: one retrain run with the gate (app/learning/retrain_run.py), against the bundle
registry the service serves from (``MICREC_REGISTRY_DIR`` / ``--registry``). Runs under
``torchrun`` like ``micrec train`` (rank 0 exports, evaluates and writes the registry).

Exit status: 0 promoted, 5 passed the gate and started as a canary
(``MICREC_TRAINER_CANARY_SHARE``), 3 refused (the current bundle keeps serving), 4 skipped (no
interaction newer than the current bundle's training data), 2 bad input."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from app.commands.export import add_settings_args
from model.commands.runner import UserError

REFUSED_EXIT = 3
SKIPPED_EXIT = 4
CANARY_EXIT = 5


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "retrain",
        help="train a candidate on exported live data; promote it only if it measures better",
    )
    add_settings_args(p, bundle=False)
    p.add_argument("--registry", type=Path, help="bundle registry (MICREC_REGISTRY_DIR)")
    p.add_argument("--data", type=Path, help="an exported dataset (micrec export) to use")
    p.add_argument("--work", type=Path, help="runs directory (MICREC_RETRAIN_DIR)")
    w = p.add_mutually_exclusive_group()
    w.add_argument("--window-fraction", type=float, help="MICREC_RETRAIN_WINDOW_FRACTION")
    w.add_argument("--window-days", type=float, help="MICREC_RETRAIN_WINDOW_DAYS")
    p.add_argument("--metric", help="gate metric (MICREC_RETRAIN_METRIC, e.g. ndcg@20)")
    p.add_argument("--slice", dest="slice_name", help="gate slice (MICREC_RETRAIN_SLICE)")
    p.add_argument("--tolerance", type=float, help="MICREC_RETRAIN_TOLERANCE")
    p.add_argument("--margin", type=float, help="MICREC_RETRAIN_MARGIN")
    p.add_argument("--min-users", type=int, help="MICREC_RETRAIN_MIN_USERS")
    t = p.add_mutually_exclusive_group()
    t.add_argument("--tune", action="store_true", default=None, help="re-run the [tune] search")
    t.add_argument("--no-tune", dest="tune", action="store_false", help="no search (default)")
    p.add_argument("--epochs", type=int, help="override [train] epochs")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from app.learning.jobs import open_store, registry_of
    from app.learning.retrain_run import RetrainOptions, retrain
    from app.settings import load_settings
    from app.store.base import StoreUnavailable
    from model.registry import RegistryError
    from model.retrain import Gate, Window

    overrides = {
        "retrain_dir": args.work,
        "retrain_window_fraction": args.window_fraction,
        "retrain_window_days": args.window_days,
        "retrain_metric": args.metric,
        "retrain_slice": args.slice_name,
        "retrain_tolerance": args.tolerance,
        "retrain_margin": args.margin,
        "retrain_min_users": args.min_users,
        "retrain_tune": args.tune,
        "registry_dir": args.registry,
    }
    s = load_settings(
        env_file=args.env_file, **{k: v for k, v in overrides.items() if v is not None}
    )
    if args.epochs is not None and args.epochs < 1:
        raise UserError(f"--epochs must be >= 1, got {args.epochs}")
    try:
        window = Window(s.retrain_window_fraction, s.retrain_window_days, s.retrain_min_user_rows)
        gate = Gate(
            s.retrain_metric,
            s.retrain_slice,
            s.retrain_tolerance,
            margin=s.retrain_margin,
            min_users=s.retrain_min_users,
            confidence=s.retrain_confidence,
        )
    except ValueError as err:
        raise UserError(str(err)) from None
    opts = RetrainOptions(
        window=window,
        gate=gate,
        tune=s.retrain_tune,
        epochs=args.epochs,
        data=args.data,
        progress=not args.quiet,
        keep_runs=s.retrain_keep_runs,
        max_timestamp_skew_s=s.max_timestamp_skew_s,
        canary_share=s.trainer_canary_share,
        positive_events=tuple(s.feedback_positive),
    )
    registry = registry_of(s)
    store = open_store(s)
    try:
        out = retrain(store, registry, s.retrain_dir, opts)
    except (RegistryError, ValueError, StoreUnavailable) as err:
        raise UserError(str(err)) from None
    finally:
        store.close()
    if out is None:  # a rank other than 0 under torchrun
        return 0
    print(json.dumps(out.to_json(), indent=1))
    print(f"report: {out.run_dir / 'candidate' / 'retrain-report.md'}")
    exits = {"promoted": 0, "refused": REFUSED_EXIT, "canary": CANARY_EXIT}
    return exits.get(out.outcome, SKIPPED_EXIT)
