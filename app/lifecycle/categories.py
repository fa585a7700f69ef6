"""Item categories: their stored form (one string, parts separated by ``|``) and the prefix
rule of category filters (recommendations, the item list), with an index over a fixed
catalogue so a filter needs no scan."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence

import numpy as np

from model.columns import CategoryColumn

CATEGORY_SEPARATOR = "|"


def join_categories(categories: list[str]) -> str:
    """Stored form of a category list (the store keeps one string per item)."""
    return CATEGORY_SEPARATOR.join(c.strip() for c in categories if c.strip())


def split_categories(categories: str) -> list[str]:
    return [c.strip() for c in categories.split(CATEGORY_SEPARATOR) if c.strip()]


def category_matches(categories: str, prefix: str) -> bool:
    """Case-insensitive prefix match on the whole category string or any ``|`` part.

    ``prefix`` must already be lower-cased and stripped.
    """
    text = categories.lower()
    if text.startswith(prefix):
        return True
    return any(part.strip().startswith(prefix) for part in text.split(CATEGORY_SEPARATOR))


def _category_keys(categories: str) -> set[str]:
    """The strings a prefix is matched against: the whole string and each ``|`` part."""
    text = categories.lower()
    return {text} | {part.strip() for part in text.split(CATEGORY_SEPARATOR)}


class CategoryIndex:
    """Rows of a fixed catalogue whose categories match a prefix, without a scan.

    Same matching as :func:`category_matches`. Catalogues repeat a few thousand category
    strings over up to millions of items, so the sorted keys come from the distinct
    strings and each maps to the rows that carry it: a lookup is a binary search plus the
    size of the answer.
    """

    def __init__(self, categories: Sequence[str]) -> None:
        rows_of: dict[str, list[int]] = {}
        for row, cats in enumerate(categories):
            rows_of.setdefault(cats, []).append(row)
        distinct = list(rows_of)
        self._index([np.asarray(rows_of[c], dtype=np.int64) for c in distinct], distinct)

    @classmethod
    def of(cls, categories: Sequence[str]) -> CategoryIndex:
        """The index of ``categories``; a dictionary-encoded column (model/columns.py) is
        grouped by its codes with numpy, without one Python object per row."""
        if not isinstance(categories, CategoryColumn):
            return cls(categories)
        codes = np.asarray(categories.codes)
        order = np.argsort(codes, kind="stable").astype(np.int64)
        bounds = np.searchsorted(codes[order], np.arange(len(categories.names) + 1))
        rows = [order[bounds[k] : bounds[k + 1]] for k in range(len(categories.names))]
        self = cls.__new__(cls)
        self._index(rows, categories.names)
        return self

    def _index(self, rows: list[np.ndarray], distinct: Sequence[str]) -> None:
        """``rows[k]``: the sorted rows whose category string is ``distinct[k]``."""
        self._rows = rows
        pairs = sorted((key, k) for k, c in enumerate(distinct) for key in _category_keys(c))
        self._keys = [key for key, _ in pairs]
        self._distinct = [k for _, k in pairs]

    def rows(self, prefix: str, *, at_most: int | None = None) -> np.ndarray | None:
        """Sorted rows whose categories match ``prefix`` (lower-cased and stripped); None
        when more than ``at_most`` might (counted before the union, so that is cheap)."""
        lo = bisect_left(self._keys, prefix)
        hi = bisect_left(self._keys, prefix + "\U0010ffff", lo)
        picked = {self._distinct[j] for j in range(lo, hi)}
        if at_most is not None and sum(len(self._rows[k]) for k in picked) > at_most:
            return None
        if not picked:
            return np.empty(0, dtype=np.int64)
        return np.unique(np.concatenate([self._rows[k] for k in picked]))
