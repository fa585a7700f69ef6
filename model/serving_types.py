"""What the inference engine (model.inference) hands its callers: a user's serving vector
and how it was made, a co-purchase boost, a domain's servable items. Plain data, so the
service's modules can type against them without the engine."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

USER_METHODS = ("inductive", "cross_domain", "none", "query")


@dataclass(frozen=True)
class UserEmbedding:
    """A user's serving vector in one domain and how it was obtained.

    method: "inductive" (history in the target domain), "cross_domain" (history only in
    other domains), "none" (no usable history: the caller must fall back), "query" (no
    history: started from a text or a picture, ``query_vector``).
    """

    vector: np.ndarray
    method: str
    n_history: int
    boost: ItemBoost | None = None
    """Scores added to some items' inner product (the co-purchase boost from the user's
    other-domain items, model.nn.copurchase): the served score of item i is ``<vector, v_i>`` +
    its boost (0 for an item not listed). None: the inner product alone."""


@dataclass(frozen=True)
class ItemBoost:
    """``scores[k]`` (float32, already weighted, > 0) is added to ``item_ids[k]``'s score."""

    item_ids: list[str]
    scores: np.ndarray


@dataclass
class DomainCatalogue:
    """The servable bundle items of one domain: ``vectors`` float32 [n_items, dim] (inner
    product with a user's vector = the served score, the blend's parts included),
    ``popularity`` int64 training degree, titles/categories for display and filters.
    With a serving cache ``vectors`` is a read-only memory map (float32 or float16) and
    ids, titles and categories are memory-mapped columns (model/columns.py), shared by
    every worker; any sequence of strings works (test doubles pass lists).
    ``unreachable``: (count, first) of the ids not in normal form, None = not counted."""

    domain: str
    item_ids: Sequence[str]
    vectors: np.ndarray
    popularity: np.ndarray
    categories: Sequence[str]
    titles: Sequence[str]
    unreachable: tuple[int, str] | None = None

    def item_ids_at(self, rows: np.ndarray) -> list[str]:
        ids = self.item_ids
        return [ids[r] for r in np.asarray(rows).tolist()]
