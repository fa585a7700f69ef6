"""``micrec data import``: convert raw Amazon review dumps into a dataset folder.

Usage (one ``--domain`` per category file pair, in priority order)::

    micrec data import amazon2023 \
        --domain food=Grocery_and_Gourmet_Food.jsonl.gz:meta_Grocery_and_Gourmet_Food.jsonl.gz \
        --domain kitchen=Home_and_Kitchen.jsonl.gz:meta_Home_and_Kitchen.jsonl.gz \
        --out data/food-kitchen [--min-rating 4] [--images-dir DIR] [--min-user-domains 2]

    micrec data import amazon2018 \
        --domain arts=Arts_Crafts_and_Sewing.csv:meta_Arts_Crafts_and_Sewing.json.gz \
        --domain office=Office_Products_5.json.gz:meta_Office_Products.json.gz --out DIR

``--domain NAME=INTERACTIONS[:META]``: NAME becomes the ``domain`` column; the metadata
file is optional (items then have empty text). Files may be plain or gzip.
"""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path

from model.commands.runner import UserError
from model.data.importers import FORMATS, IMAGE_EXTENSIONS, ImporterError, ImportOptions
from model.data.importers.base import DEFAULT_DESCRIPTION_MAX_CHARS, parse_domain_spec

_INTERACTIONS_HELP = {
    "amazon2023": "reviews JSONL (e.g. Grocery_and_Gourmet_Food.jsonl.gz)",
    "amazon2018": "ratings-only CSV (item,user,rating,timestamp) or reviews JSON "
    "(e.g. Office_Products_5.json.gz)",
}
_META_HELP = {
    "amazon2023": "meta JSONL (e.g. meta_Grocery_and_Gourmet_Food.jsonl.gz)",
    "amazon2018": "meta JSON (e.g. meta_Office_Products.json.gz)",
}

_EPILOG = """\
Output: OUT/interactions.csv (user_id,item_id,domain,timestamp,rating),
OUT/items.csv (item_id,domain,title,categories,description,image), OUT/import.json
(sources, options, counts) and OUT/images/ when --images-dir matched files.

Users are matched across domains by reviewer id. An item id seen in an earlier domain
keeps that domain; its rows in later domains are dropped and counted. Repeated
(user, item) pairs keep the earliest row. --min-rating applies before de-duplication.

Images are never downloaded: with --images-dir, a file named <item_id>.jpg, .jpeg,
.png or .webp (item_id = {item_key}) is copied to OUT/images/ and referenced as
images/<item_id>.<ext>.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "import",
        help="import raw Amazon review dumps (2023 or 2018) into a dataset folder",
        description="Convert raw Amazon review dumps into a dataset folder.",
    )
    formats = p.add_subparsers(dest="import_format", required=True, metavar="FORMAT")
    for name, title, item_key in (
        ("amazon2023", "Amazon Reviews 2023", "parent_asin"),
        ("amazon2018", "Amazon Review Data (2018)", "asin"),
    ):
        fp = formats.add_parser(
            name,
            help=title,
            description=f"Import {title} category files, one domain each.",
            epilog=textwrap.dedent(_EPILOG.format(item_key=item_key)),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        _add_options(fp, name)
        fp.set_defaults(handler=_handler)


def _add_options(p: argparse.ArgumentParser, fmt: str) -> None:
    p.add_argument(
        "--domain",
        dest="domains",
        action="append",
        required=True,
        metavar="NAME=INTERACTIONS[:META]",
        help=f"one domain (repeat for several, in priority order); INTERACTIONS: "
        f"{_INTERACTIONS_HELP[fmt]}; META: {_META_HELP[fmt]}",
    )
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="output dataset folder")
    p.add_argument(
        "--min-rating",
        type=float,
        default=None,
        metavar="T",
        help="keep rows with rating >= T (default: keep all)",
    )
    p.add_argument(
        "--images-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help=f"local folder of <item_id>{{{','.join(IMAGE_EXTENSIONS)}}} images to copy",
    )
    p.add_argument(
        "--min-user-domains",
        type=int,
        default=1,
        metavar="N",
        help="drop users active in fewer domains (2: cross-domain users only; default 1)",
    )
    p.add_argument(
        "--max-description-chars",
        type=int,
        metavar="N",
        default=DEFAULT_DESCRIPTION_MAX_CHARS,
        help=f"cap on the description length (default {DEFAULT_DESCRIPTION_MAX_CHARS})",
    )
    p.add_argument(
        "--skip-malformed",
        action="store_true",
        help="skip and count malformed lines instead of stopping at the first",
    )
    p.add_argument("--overwrite", action="store_true", help="replace CSV files already in --out")


def _handler(args: argparse.Namespace) -> int:
    options = ImportOptions(
        min_rating=args.min_rating,
        images_dir=args.images_dir,
        min_user_domains=args.min_user_domains,
        max_description_chars=args.max_description_chars,
        skip_malformed=args.skip_malformed,
        overwrite=args.overwrite,
    )
    try:
        sources = [parse_domain_spec(spec) for spec in args.domains]
        report = FORMATS[args.import_format](sources, args.out, options)
    except ImporterError as err:
        raise UserError(str(err)) from err
    print(report.format())
    return 0
