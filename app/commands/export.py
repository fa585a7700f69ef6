"""``micrec export OUT``: the serving bundle's training data + the store's interactions and
items as a dataset folder (app/learning/export.py). Reads the same settings as ``micrec serve``
(``MICREC_*`` / ``--env-file``): the store URL and the bundle."""

from __future__ import annotations

import argparse
from pathlib import Path

from model.commands.runner import UserError


def add_settings_args(p: argparse.ArgumentParser, *, bundle: bool = True) -> None:
    p.add_argument("--env-file", help="read MICREC_* settings from this file (as micrec serve)")
    if not bundle:
        return
    p.add_argument(
        "--bundle",
        type=Path,
        default=None,
        help="bundle whose training data is exported (default: the registry's current "
        "version, else MICREC_BUNDLE_PATH)",
    )


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="write the bundle's training data + the store's interactions as a dataset folder",
    )
    p.add_argument("out", type=Path, help="dataset folder to write (interactions.csv, items.csv)")
    add_settings_args(p)
    p.add_argument("--force", action="store_true", help="replace OUT if it exists")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from app.learning.export import export_dataset
    from app.learning.jobs import open_store, serving_bundle
    from app.settings import load_settings
    from app.store.base import StoreUnavailable

    settings = load_settings(
        env_file=args.env_file
    )  # SettingsError: one line (model.commands.runner)
    bundle = serving_bundle(settings, args.bundle)
    store = open_store(settings)
    try:
        result = export_dataset(
            store,
            bundle,
            args.out,
            replace=args.force,
            progress=not args.quiet,
            max_timestamp_skew_s=settings.max_timestamp_skew_s,
        )
    except (FileExistsError, StoreUnavailable) as err:
        raise UserError(str(err)) from None
    finally:
        store.close()
    c = result.counts
    print(f"dataset: {result.path}")
    print(
        f"items: {c.get('items_store', 0)} from the store, {c.get('items_bundle', 0)} from "
        f"{result.meta['base']}"
    )
    print(
        f"interactions: {c.get('rows_bundle', 0)} bundle, {c.get('rows_store', 0)} store; "
        f"skipped {c.get('rows_skipped_erased', 0)} of erased users, "
        f"{c.get('rows_skipped_unknown_item', 0)} of unregistered items, "
        f"{c.get('rows_skipped_bad_timestamp', 0)} with out-of-range timestamps"
    )
    return 0
