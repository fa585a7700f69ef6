"""The one interface every content encoder implements, and the item feature matrices."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

MODALITIES = ("text", "image")


class ContentEncoder(ABC):
    """A frozen pretrained encoder for one modality.

    ``encode`` returns float32 ``[len(inputs), dim]`` with L2-normalised rows. Inputs are
    ``str`` for text encoders and ``PIL.Image.Image`` for image encoders.
    """

    name: str
    """Stable identifier used as the feature-cache key and stored in bundles."""
    modality: str
    """"text" or "image"."""
    dim: int

    @abstractmethod
    def encode(
        self, inputs: Sequence[Any], *, batch_size: int = 64, progress: bool = False
    ) -> np.ndarray: ...


@dataclass
class ModalityFeatures:
    """Features of one modality for a list of items.

    ``vectors`` is float32 [n_items, dim], L2-normalised rows, zero rows where ``mask`` is
    False (modality missing for that item).
    """

    encoder: str
    vectors: np.ndarray
    mask: np.ndarray

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])


@dataclass
class ItemFeatures:
    """Content features for ``item_ids`` (row i of every modality is item_ids[i])."""

    item_ids: list[str]
    modalities: dict[str, ModalityFeatures]

    def rows(self, item_ids: Sequence[str]) -> ItemFeatures:
        """Features re-ordered (and sub-selected) to ``item_ids``; unknown ids get zero + mask False."""
        pos = {iid: k for k, iid in enumerate(self.item_ids)}
        idx = np.array([pos.get(i, -1) for i in item_ids], dtype=np.int64)
        out: dict[str, ModalityFeatures] = {}
        for m, f in self.modalities.items():
            vec = np.zeros((len(idx), f.dim), dtype=np.float32)
            mask = np.zeros(len(idx), dtype=bool)
            ok = idx >= 0
            vec[ok] = f.vectors[idx[ok]]
            mask[ok] = f.mask[idx[ok]]
            out[m] = ModalityFeatures(f.encoder, vec, mask)
        return ItemFeatures(list(item_ids), out)
