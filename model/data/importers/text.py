"""Item text cleaning: HTML stripped, entities decoded, whitespace collapsed, length capped;
and the items.csv text columns built from a :class:`~.base.RawMeta`."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

from model.data.importers.base import RawMeta

TITLE_MAX_CHARS = 300

_SCRIPT = re.compile(r"<(script|style)\b.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
# A tag must start with a letter (or "/letter") so that plain text such as "a < b > c"
# or the category separator " > " survives.
_TAG = re.compile(r"</?[A-Za-z][^<>]*>")
_WS = re.compile(r"\s+")


def clean_text(text: str, max_chars: int | None = None) -> str:
    """Strip HTML tags/comments/scripts, decode entities, collapse whitespace, cap length."""
    if not text:
        return ""
    if "<" in text:
        text = _TAG.sub(" ", _COMMENT.sub(" ", _SCRIPT.sub(" ", text)))
    if "&" in text:
        text = html.unescape(text)
    text = _WS.sub(" ", text).strip()
    return truncate(text, max_chars) if max_chars is not None else text


def truncate(text: str, max_chars: int) -> str:
    """Cut ``text`` to at most ``max_chars`` characters, at a word boundary when one is
    near, marking the cut with ``...`` (the result never exceeds ``max_chars``)."""
    if len(text) <= max_chars:
        return text
    if max_chars <= 3:
        return text[:max_chars]
    cut = text[: max_chars - 3]
    space = cut.rfind(" ")
    if space >= (max_chars * 2) // 3:  # do not throw away a third of the budget
        cut = cut[:space]
    return cut.rstrip(" ,;:.-") + "..."


@dataclass(frozen=True, slots=True)
class ItemText:
    """The cleaned text columns of items.csv."""

    title: str = ""
    categories: str = ""
    description: str = ""


def build_item_text(meta: RawMeta, max_description_chars: int) -> ItemText:
    """Clean a :class:`RawMeta` into items.csv columns.

    ``categories`` is the category path joined as ``"A > B > C"`` followed by
    ``" | brand: X"`` (or ``store: X``) when known; empty path entries (2018 lists contain
    stray HTML) are dropped, and so is a brand equal to the last path entry.
    """
    title = clean_text(meta.title, TITLE_MAX_CHARS)
    path = [c for c in (clean_text(c, TITLE_MAX_CHARS) for c in meta.categories) if c]
    brand = clean_text(meta.brand, TITLE_MAX_CHARS)
    categories = " > ".join(path)
    if brand and (not path or brand.lower() != path[-1].lower()):
        tag = f"{meta.brand_label}: {brand}"
        categories = f"{categories} | {tag}" if categories else tag
    description = clean_text(" ".join(meta.description), max_description_chars)
    return ItemText(title, categories, description)
