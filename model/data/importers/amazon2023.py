"""Importer for Amazon Reviews 2023 (McAuley lab, https://amazon-reviews-2023.github.io).

Per category the dump has two JSON-lines files (plain or ``.gz``):

* reviews, e.g. ``Grocery_and_Gourmet_Food.jsonl.gz``: one object per line with
  ``rating``, ``title``, ``text``, ``images``, ``asin``, ``parent_asin``, ``user_id``,
  ``timestamp`` (unix **milliseconds**), ``helpful_vote``, ``verified_purchase``;
* metadata, e.g. ``meta_Grocery_and_Gourmet_Food.jsonl.gz``: ``main_category``,
  ``title``, ``average_rating``, ``rating_number``, ``features`` (list), ``description``
  (list), ``price``, ``images`` (list of ``{thumb, large, variant, hi_res}``), ``videos``,
  ``store``, ``categories`` (list), ``details`` (dict), ``parent_asin``,
  ``bought_together``.

Mapping: ``item_id`` = ``parent_asin`` (reviews of colour/size variants collapse onto the
product, and the metadata is keyed by it); ``user_id`` verbatim; ``timestamp`` = ms // 1000;
``rating`` verbatim. Text: ``title``; ``categories`` = the ``categories`` path (or
``main_category`` when the path is empty) plus ``store: <store>`` (``details["Brand"]``
when there is no store); ``description`` = the ``description`` paragraphs, or the
``features`` bullets when there is no description. Image URLs in the metadata are
ignored: images come only from a local folder (see :class:`.base.ImportOptions`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

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
from model.data.importers.lines import parse_json_object, req_str, str_list, to_float, to_int
from model.data.importers.report import ImportReport


def parse_review(line: bytes, lineno: int) -> Review:
    """One reviews line -> :class:`Review` (``item`` is ``parent_asin``)."""
    obj = parse_json_object(line)
    timestamp, rating = obj.get("timestamp"), obj.get("rating")
    if timestamp is None:
        raise MalformedLine("missing 'timestamp'")
    if rating is None:
        raise MalformedLine("missing 'rating'")
    return Review(
        req_str(obj, "user_id"),
        req_str(obj, "parent_asin"),
        to_int(timestamp, "'timestamp'") // 1000,
        to_float(rating, "'rating'"),
    )


def parse_meta(line: bytes, lineno: int) -> RawMeta:
    """One metadata line -> :class:`RawMeta` keyed by ``parent_asin``."""
    obj = parse_json_object(line)
    categories = str_list(obj.get("categories")) or str_list(obj.get("main_category"))
    brand, label = obj.get("store"), "store"
    if not isinstance(brand, str) or not brand.strip():
        details = obj.get("details")
        brand = details.get("Brand") if isinstance(details, dict) else None
        label = "brand"
    description = str_list(obj.get("description")) or str_list(obj.get("features"))
    title = obj.get("title")
    return RawMeta(
        item_id=req_str(obj, "parent_asin"),
        title=title if isinstance(title, str) else "",
        categories=categories,
        brand=brand if isinstance(brand, str) else "",
        brand_label=label,
        description=description,
    )


def _review_parser(path: Path) -> ReviewParser:
    return parse_review


def _meta_parser(path: Path) -> MetaParser:
    return parse_meta


FORMAT = FormatSpec("amazon2023", _review_parser, _meta_parser)


def import_amazon2023(
    domains: Sequence[DomainSource], out: str | Path, options: ImportOptions | None = None
) -> ImportReport:
    """Import Amazon Reviews 2023 category files (one :class:`DomainSource` per domain,
    reviews file + optional metadata file) into the project format in ``out``."""
    return run_import(FORMAT, domains, out, options)
