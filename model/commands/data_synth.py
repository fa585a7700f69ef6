"""``micrec data synth``: write the embedded synthetic multi-domain catalogue.

Example::

    micrec data synth --out data/synth                       # the demo catalogue
    micrec data synth --out /tmp/t --tiny --no-images       # unit-test size, no PNGs
    micrec data synth --out d --domains food,office --overlap 0.3 --set style_weight=2.0

Precedence: ``--tiny`` preset < ``--config FILE.json`` < explicit flags < ``--set``.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

from model.commands.runner import UserError
from model.data.synth import SynthConfig, SynthConfigError, write_synthetic_catalogue

log = logging.getLogger(__name__)

# Flags that map 1:1 onto SynthConfig fields: (flag, field, type).
_FLAGS: tuple[tuple[str, str, type], ...] = (
    ("--seed", "seed", int),
    ("--users", "users", int),
    ("--items-per-domain", "items_per_domain", int),
    ("--topics", "topics_per_domain", int),
    ("--image-size", "image_size", int),
    ("--overlap", "overlap", float),
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "synth",
        help="write the synthetic multi-domain catalogue (CSV + PNG images)",
        description=__doc__.splitlines()[0] if __doc__ else None,
    )
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="output dataset folder")
    p.add_argument("--tiny", action="store_true", help="small unit-test preset")
    p.add_argument(
        "--config", type=Path, metavar="FILE", help="JSON of SynthConfig fields (or a synth.json)"
    )
    p.add_argument("--domains", metavar="A,B,..", help="domain names (default food,kitchen,office)")
    for flag, name, typ in _FLAGS:
        metavar = "N" if typ is int else "X"
        p.add_argument(
            flag, dest=name, type=typ, default=None, metavar=metavar, help=f"SynthConfig.{name}"
        )
    p.add_argument("--no-images", action="store_true", help="skip the PNG images")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any SynthConfig field; VALUE is JSON (e.g. domain_density=[1,1,0.3])",
    )
    p.set_defaults(handler=run_synth)


def _parse_value(raw: str) -> Any:
    """JSON when it parses (numbers, lists, booleans), else the raw string."""
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def config_from_args(args: argparse.Namespace) -> SynthConfig:
    """Merge preset, config file, flags and ``--set`` into a validated SynthConfig."""
    values: dict[str, Any] = SynthConfig.tiny().to_dict() if args.tiny else {}
    if args.config is not None:
        try:
            loaded = json.loads(Path(args.config).read_text())
        except json.JSONDecodeError as err:
            raise UserError(f"{args.config}: not valid JSON: {err}") from err
        if not isinstance(loaded, dict):
            raise UserError(f"{args.config}: expected a JSON object of SynthConfig fields")
        # A synth.json written by this command nests the config; accept both forms.
        values.update(loaded.get("config", loaded) if "format_version" in loaded else loaded)
    if args.domains is not None:
        values["domains"] = [d.strip() for d in args.domains.split(",") if d.strip()]
    for _flag, name, _typ in _FLAGS:
        if getattr(args, name) is not None:
            values[name] = getattr(args, name)
    if args.no_images:
        values["images"] = False
    for item in args.overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            raise UserError(f"--set expects KEY=VALUE, got {item!r}")
        values[key.strip()] = _parse_value(raw)
    try:
        return SynthConfig.from_dict(values)
    except (SynthConfigError, TypeError) as err:
        raise UserError(str(err)) from err


def run_synth(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    start = time.perf_counter()
    try:
        out = write_synthetic_catalogue(args.out, config)
    except SynthConfigError as err:
        raise UserError(str(err)) from err
    stats = json.loads((out / "synth.json").read_text())["stats"]
    print(
        f"wrote {stats['interactions']} interactions, {stats['users']} users, "
        f"{stats['items']} items ({stats['items'] - stats['items_without_image']} images) "
        f"in {len(config.domains)} domains to {out} in {time.perf_counter() - start:.1f}s"
    )
    return 0
