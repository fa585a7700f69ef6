"""Inductive inference: the library API the service (and offline evaluation) call.

Interface contract (implementation in progress; signatures are stable):

    bundle = load_bundle(path)                  # model.bundle; never unpickles
    engine = InferenceEngine.from_bundle(bundle)
    engine.model_version, engine.domains, engine.dim, engine.encoders_info
    cat = engine.catalogue("office")            # DomainCatalogue: ids, vectors, popularity...
    emb = engine.embed_user("office", {"office": ["i1", "i2"], "arts": ["i9"]})
    emb.vector  # float32 [dim]; score(item) = emb.vector @ item_vector
    emb.method  # "inductive" | "cross_domain" | "none"
    content = engine.encode_content(text="red mug", image=None)   # {"text": [384] float32}
    vec = engine.add_item("new-1", "kitchen", content)            # float32 [dim]
    engine.remove_item("new-1")
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

USER_METHODS = ("inductive", "cross_domain", "none")


@dataclass(frozen=True)
class UserEmbedding:
    """A user's serving vector in one domain and how it was obtained.

    method: "inductive" (history in the target domain, possibly plus content),
    "cross_domain" (history only in other domains), "none" (no usable history: the
    caller must fall back, e.g. to popularity).
    """

    vector: np.ndarray
    method: str
    n_history: int


@dataclass
class DomainCatalogue:
    """The servable items of one domain as the bundle ships them.

    ``vectors`` float32 [n_items, dim] (inner product = score); ``popularity`` int64
    training degree; ``categories``/``titles`` for filters and display.
    """

    domain: str
    item_ids: list[str]
    vectors: np.ndarray
    popularity: np.ndarray
    categories: list[str]
    titles: list[str]


class InferenceEngine:
    """Serves a trained MICRec bundle: user and item embeddings without retraining."""

    model_version: str
    domains: list[str]
    dim: int
    encoders_info: dict[str, dict[str, Any]]

    @classmethod
    def from_bundle(cls, bundle: Any, *, device: str = "cpu") -> InferenceEngine:
        raise NotImplementedError

    def catalogue(self, domain: str) -> DomainCatalogue:
        raise NotImplementedError

    def item_domain(self, item_id: str) -> str | None:
        """Domain of a bundle or added item, None when unknown."""
        raise NotImplementedError

    def embed_user(self, domain: str, history: Mapping[str, Sequence[str]]) -> UserEmbedding:
        """Embed a user in ``domain`` from item ids per domain (unknown ids are ignored)."""
        raise NotImplementedError

    def encode_content(self, *, text: str | None, image: Any | None) -> dict[str, np.ndarray]:
        """Raw encoder outputs per modality (L2-normalised) for a new item's content."""
        raise NotImplementedError

    def add_item(self, item_id: str, domain: str, content: Mapping[str, np.ndarray]) -> np.ndarray:
        """Register a new item (content only); returns its serving vector [dim]."""
        raise NotImplementedError

    def remove_item(self, item_id: str) -> None:
        raise NotImplementedError
