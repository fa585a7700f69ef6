"""``micrec train DATASET --config FILE``: train MICRec (or an ablation) and write a bundle."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from model.commands.runner import UserError
from model.runconfig import load_run_config

log = logging.getLogger("micrec.train")


def _handler(args: argparse.Namespace) -> int:
    overrides: dict[str, dict[str, object]] = {}
    if args.device:
        overrides.setdefault("train", {})["device"] = args.device
    if args.epochs:
        overrides.setdefault("train", {})["epochs"] = args.epochs
    if args.variant:
        overrides.setdefault("model", {})["variant"] = args.variant
    if args.no_tune:
        overrides.setdefault("tune", {})["trials"] = 0
    if args.seed is not None:
        overrides.setdefault("train", {})["seed"] = args.seed
        overrides.setdefault("data", {})["seed"] = args.seed
    cfg = load_run_config(
        args.config, overrides
    )  # ConfigError: one line from model.commands.runner
    if args.print_config:
        import tomllib  # noqa: F401 - stdlib reader; we print TOML by hand below

        for section, values in cfg.to_dict().items():
            print(f"[{section}]")
            for k, v in values.items():
                # an unset key is printed commented out, so the output stays valid TOML
                print(f"{k} = {json.dumps(v)}" if v is not None else f"# {k} = (unset)")
            print()
        return 0
    if args.dataset is None:
        raise UserError("DATASET is required")
    from model.pipeline import train_run

    out = train_run(
        args.dataset, cfg, Path(args.out), progress=not args.quiet, run_test=not args.no_test
    )
    m = out.result
    print(f"bundle: {out.bundle_dir}")
    tuning = json.loads((out.bundle_dir / "manifest.json").read_text())["metrics"].get("tuning")
    if tuning:
        print(
            f"tuning: trial {tuning['chosen']} of {tuning['trials']} chosen on validation "
            f"({tuning['chosen_params']}); every trial in {out.bundle_dir / 'tuning.json'}"
        )
    print(f"best epoch {m.best_epoch}, validation NDCG@20 {100 * m.best_val:.2f}%")
    print(
        f"{m.seconds_per_epoch:.2f} s/epoch, peak memory {m.peak_memory_mb:.0f} MB on {cfg.train.device}"
    )
    for d, slices in out.test_metrics.items():
        row = slices.get("all", {})
        r, n = row.get("recall@20"), row.get("ndcg@20")
        if r is not None and n is not None:
            print(
                f"test {d}: Recall@20 {100 * r:.2f}%  NDCG@20 {100 * n:.2f}%  (micrec evaluate for every slice)"
            )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model on a dataset folder and write a bundle")
    p.add_argument(
        "dataset", nargs="?", type=Path, help="dataset folder (interactions.csv, items.csv)"
    )
    p.add_argument(
        "--config", type=Path, default=None, help="TOML run config (see configs/micrec.toml)"
    )
    p.add_argument(
        "--out", type=Path, default=Path("artifacts/bundle"), help="bundle directory to write"
    )
    p.add_argument("--device", default=None, help="cpu | cuda | cuda:N (overrides [train] device)")
    p.add_argument("--epochs", type=int, default=None, help="override [train] epochs")
    p.add_argument(
        "--variant", default=None, help="ablation: micrec, inmo, no-cd, no-modality, ..."
    )
    p.add_argument("--seed", type=int, default=None, help="override the split and training seeds")
    p.add_argument("--no-test", action="store_true", help="skip the test-set evaluation")
    p.add_argument(
        "--no-tune",
        action="store_true",
        help="train once with the config as given (no [tune] search; the blend is still fitted)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument(
        "--print-config", action="store_true", help="print the effective config and exit"
    )
    p.set_defaults(handler=_handler)
