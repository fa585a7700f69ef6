"""``micrec encode DATASET``: compute (or refresh) the cached item content features.

Prints, per modality: items, encoded now, reused from the cache, missing (no text / no
image), failed (unreadable image), seconds and items/s. Re-running on unchanged data
encodes nothing; editing an item re-encodes only that item.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from model.commands.runner import UserError
from model.data.dataset import Dataset
from model.encoders.base import ContentEncoder
from model.encoders.factory import BUILTIN_MODALITY, DEFAULT_ENCODERS, OPENCLIP


def _load_dataset(path: str) -> Dataset:
    from model.data.loading import load_dataset

    return load_dataset(path)


def _choices(modality: str) -> list[str]:
    return [n for n, m in BUILTIN_MODALITY.items() if m == modality] + [OPENCLIP, "none"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "encode",
        help="encode item text/images into the feature cache",
        description=__doc__.splitlines()[0].strip("`"),
    )
    p.add_argument("dataset", help="dataset folder (interactions.csv + items.csv)")
    p.add_argument("--cache-dir", default="artifacts/cache", help="feature cache folder")
    p.add_argument(
        "--text", default=DEFAULT_ENCODERS["text"], choices=_choices("text"), help="text encoder"
    )
    p.add_argument(
        "--image",
        default=DEFAULT_ENCODERS["image"],
        choices=_choices("image"),
        help="image encoder",
    )
    p.add_argument("--device", default="cpu", help="torch device for the encoders (cpu, cuda)")
    p.add_argument("--batch-size", type=int, default=64, help="encoder batch size")
    p.add_argument("--clip-model", default=None, help="openclip: architecture name or JSON config")
    p.add_argument("--clip-weights", default=None, help="openclip: local weights file")
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bars (default: when stderr is a terminal)",
    )
    p.set_defaults(handler=cmd_encode)


def _encoders(args: argparse.Namespace) -> dict[str, ContentEncoder]:
    from model.encoders.factory import create_encoder

    out: dict[str, ContentEncoder] = {}
    for modality in ("text", "image"):
        name = getattr(args, modality)
        if name == "none":
            continue
        if name == OPENCLIP and (args.clip_model is None or args.clip_weights is None):
            raise UserError(f"--{modality} openclip needs --clip-model and --clip-weights")
        try:
            if name == OPENCLIP:
                out[modality] = create_encoder(
                    name,
                    device=args.device,
                    model_name=args.clip_model,
                    weights_path=args.clip_weights,
                    modality=modality,
                )
            else:
                out[modality] = create_encoder(name, device=args.device)
        except (ImportError, ValueError) as err:
            raise UserError(str(err)) from None
    return out


def cmd_encode(args: argparse.Namespace) -> int:
    from model.encoders.cache import encode_dataset

    if args.batch_size <= 0:
        raise UserError(f"--batch-size must be positive, got {args.batch_size}")
    encoders = _encoders(args)
    if not encoders:
        raise UserError("nothing to encode: both --text and --image are 'none'")
    dataset = _load_dataset(args.dataset)
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    _features, report = encode_dataset(
        dataset, encoders, Path(args.cache_dir), batch_size=args.batch_size, progress=progress
    )
    print(f"dataset {args.dataset}: {len(dataset.items)} items; cache {args.cache_dir}")
    print(report.format_table())
    return 0
