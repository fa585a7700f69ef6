"""What the service needs from an inference engine, and the production way to load one.

``model.inference.InferenceEngine`` is the real engine; the service only ever talks to the
:class:`Engine` protocol below, so a test double (tests/app/fakes.py) implements the same
members without being an ``InferenceEngine``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from model.encoders.records import EncoderSpec
from model.inference import InferenceEngine
from model.serving_types import DomainCatalogue, UserEmbedding

EmbeddingMethod = Literal["inductive", "cross_domain", "none", "query"]
"""How the engine embedded a user (``UserEmbedding.method``); "none" = no usable history,
"query" = started from a text or a picture (``Engine.query_vector``)."""


_METHODS: dict[str, EmbeddingMethod] = {
    "inductive": "inductive",
    "cross_domain": "cross_domain",
    "none": "none",
    "query": "query",
}


def embedding_method(embedding: UserEmbedding) -> EmbeddingMethod:
    """``embedding.method`` as the Literal it is (``UserEmbedding`` types it as a str)."""
    try:
        return _METHODS[embedding.method]
    except KeyError:
        raise ValueError(f"unknown user embedding method {embedding.method!r}") from None


@runtime_checkable
class Engine(Protocol):
    """The inference engine as the service uses it (all reads thread-safe; one writer)."""

    model_version: str
    domains: list[str]
    dim: int
    """Length of the serving vectors the domain indexes hold."""
    encoders_info: dict[str, dict[str, Any]]

    def catalogue(self, domain: str) -> DomainCatalogue: ...

    def bundle_position(self, item_id: str) -> tuple[str, int] | None:
        """(domain, row in its catalogue) of a bundle item, else None."""
        ...

    def bundle_history(self, user_id: str) -> dict[str, list[str]]: ...

    def embed_user(self, domain: str, history: Mapping[str, Sequence[str]]) -> UserEmbedding: ...

    def embed_users(
        self, domain: str, histories: Sequence[Mapping[str, Sequence[str]]]
    ) -> list[UserEmbedding]:
        """``embed_user`` of each history, computed together."""
        ...

    def sample_user_vectors(self, domain: str, limit: int) -> np.ndarray: ...

    def encode_content(self, *, text: str | None, image: Any | None) -> dict[str, np.ndarray]: ...

    def add_item(self, item_id: str, domain: str, content: Mapping[str, np.ndarray]) -> np.ndarray:
        """Register ``item_id`` (replacing an earlier registration in one step, so a
        concurrent ``embed_user`` sees the old or the new version, never neither)."""
        ...

    def remove_item(self, item_id: str) -> None: ...

    @property
    def encoders_unavailable(self) -> dict[str, str]:
        """Modality -> why its encoder cannot be created here (/readyz shows it)."""
        ...

    def query_modalities(self) -> list[str]:
        """Modalities a query may be given in ([] = this model takes no queries)."""
        ...

    def encode_query(self, *, text: str | None, image: Any | None) -> dict[str, np.ndarray]: ...

    def query_vector(self, domain: str, content: Mapping[str, np.ndarray]) -> UserEmbedding:
        """The serving vector of a user started from the query ``content`` (method "query")."""
        ...


EngineFactory = Callable[[Path], Engine]
"""Loads an engine from a bundle directory (raises e.g. ``model.bundle.BundleError``)."""


def load_engine(
    path: Path,
    *,
    device: str = "cpu",
    cache_root: Callable[[Path], Path | None] | None = None,
    vector_dtype: str = "float32",
    encoder_provider: Callable[[EncoderSpec], Any] | None = None,
    clip_weights: Path | None = None,
) -> InferenceEngine:
    """The production engine factory: verify and load a bundle, never unpickling.

    ``cache_root(path)``: the serving cache directory for the bundle (None: no cache);
    ``encoder_provider``: content encoders by spec (None: in this process);
    ``clip_weights``: the local open_clip weights (model.encoders.records).
    """
    from model.bundle import load_bundle

    # With a serving cache the catalogue and the item template rows come from its
    # memory-mapped files: the JSON (one Python object per item) is read and the template
    # rows are computed only by the process that builds the cache.
    cached = cache_root is not None
    return InferenceEngine.from_bundle(
        load_bundle(path, device=device, catalogue=not cached, templates=not cached),
        device=device,
        cache_dir=None if cache_root is None else cache_root(path),
        vector_dtype=vector_dtype,
        encoder_provider=encoder_provider,
        clip_weights=clip_weights,
    )
