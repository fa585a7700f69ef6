"""Importer for Amazon Review Data 2018 (McAuley lab, https://nijianmo.github.io/amazon/).

Per category, the interaction file is either (plain or ``.gz``; told apart by content,
not by name):

* the "ratings only" CSV, e.g. ``Arts_Crafts_and_Sewing.csv``: no header, one
  ``item,user,rating,timestamp`` row per line (timestamp in unix seconds); a header line
  in the first row is tolerated; or
* a reviews JSON (e.g. the 5-core ``Arts_Crafts_and_Sewing_5.json.gz``): one object per
  line with ``overall``, ``reviewerID``, ``asin``, ``unixReviewTime``, ... (the 2014
  release's ``reviews_*_5.json.gz`` has the same fields and works too).

The metadata file (``meta_Arts_Crafts_and_Sewing.json.gz``) has one object per line:
``asin``, ``title``, ``category`` (list), ``description`` (list or string), ``brand``,
``feature`` (list), ``main_cat``, ``imageURL``/``imageURLHighRes``, ... Most lines are
strict JSON; some files (and the whole 2014 release, whose ``categories`` is a list of
paths) hold Python-literal lines (single quotes). Those are read with
:func:`ast.literal_eval`, which evaluates literals only (never code); a line that is
neither is reported as malformed with its line number.

Mapping: ``item_id`` = ``asin``, ``user_id`` = reviewer id, ``timestamp`` in seconds,
``rating`` = ``overall`` / the CSV rating. Text: ``title``; ``categories`` = the
``category`` path (else the first 2014 ``categories`` path, else ``main_cat``) plus
``brand: <brand>``; ``description`` = ``description``, or ``feature`` when empty. Image
URLs are ignored: images come only from a local folder.
"""

from __future__ import annotations

import ast
import csv
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

from model.data.importers.base import (
    DomainSource,
    FormatSpec,
    ImportOptions,
    MalformedLine,
    MetaParser,
    RawMeta,
    Review,
    ReviewParser,
)
from model.data.importers.driver import run_import
from model.data.importers.lines import (
    iter_lines,
    parse_json_object,
    req_str,
    str_list,
    to_float,
    to_int,
)
from model.data.importers.report import ImportReport


def parse_rating_row(line: bytes, lineno: int) -> Review | None:
    """One ratings-CSV line (``item,user,rating,timestamp``) -> :class:`Review`.

    Returns None for a header in line 1 (the official files have none, but re-exported
    copies often do).
    """
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as err:
        raise MalformedLine(f"not valid UTF-8 ({err})") from None
    # Ids never contain commas or quotes in the official files; fall back to the csv
    # module only when a quote shows up, since it is several times slower per line.
    fields = next(csv.reader([text])) if '"' in text else text.split(",")
    if len(fields) != 4:
        raise MalformedLine(f"expected 4 fields item,user,rating,timestamp, got {len(fields)}")
    item, user, rating, timestamp = (f.strip() for f in fields)
    if lineno == 1 and not _is_number(rating) and not _is_number(timestamp):
        return None
    if not item or not user:
        raise MalformedLine("empty item or user id")
    return Review(
        user=user,
        item=item,
        timestamp=to_int(timestamp, "timestamp"),
        rating=to_float(rating, "rating"),
    )


def parse_review_json(line: bytes, lineno: int) -> Review:
    """One reviews-JSON line (``overall``, ``reviewerID``, ``asin``, ``unixReviewTime``)."""
    obj = parse_json_object(line)
    for key in ("overall", "unixReviewTime"):
        if key not in obj:
            raise MalformedLine(f"missing {key!r}")
    return Review(
        user=req_str(obj, "reviewerID"),
        item=req_str(obj, "asin"),
        timestamp=to_int(obj["unixReviewTime"], "'unixReviewTime'"),
        rating=to_float(obj["overall"], "'overall'"),
    )


def parse_meta(line: bytes, lineno: int) -> RawMeta:
    """One metadata line (strict JSON or legacy Python literal) -> :class:`RawMeta`."""
    obj = _load_object(line)
    categories = str_list(obj.get("category"))
    if not categories:
        legacy = obj.get("categories")  # 2014: list of category paths; take the first
        if isinstance(legacy, list) and legacy and isinstance(legacy[0], list):
            categories = str_list(legacy[0])
    if not categories:
        categories = str_list(obj.get("main_cat"))
    description = str_list(obj.get("description")) or str_list(obj.get("feature"))
    title, brand = obj.get("title"), obj.get("brand")
    return RawMeta(
        item_id=req_str(obj, "asin"),
        title=title if isinstance(title, str) else "",
        categories=categories,
        brand=brand if isinstance(brand, str) else "",
        brand_label="brand",
        description=description,
    )


def _load_object(line: bytes) -> dict[str, Any]:
    try:
        return parse_json_object(line)
    except MalformedLine as json_err:
        if not line.startswith(b"{"):
            raise
        try:
            obj = ast.literal_eval(line.decode("utf-8"))
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            raise MalformedLine(f"neither JSON nor a Python literal ({json_err})") from None
        if not isinstance(obj, dict):
            raise MalformedLine("expected an object") from None
        return obj


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _review_parser(path: Path) -> ReviewParser:
    """JSON reviews when the first non-blank line starts with ``{``, else ratings CSV."""
    with closing(iter_lines(path)) as lines:  # close the file after the first line
        for _, line in lines:
            return parse_review_json if line.startswith(b"{") else parse_rating_row
    return parse_rating_row  # empty file: either parser reads nothing


def _meta_parser(path: Path) -> MetaParser:
    return parse_meta


FORMAT = FormatSpec("amazon2018", _review_parser, _meta_parser)


def import_amazon2018(
    domains: Sequence[DomainSource], out: str | Path, options: ImportOptions | None = None
) -> ImportReport:
    """Import Amazon Review Data 2018 category files (one :class:`DomainSource` per
    domain: ratings CSV or reviews JSON + optional metadata JSON) into ``out``."""
    return run_import(FORMAT, domains, out, options)
