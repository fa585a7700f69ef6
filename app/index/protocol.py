"""What the service asks of a per-domain index, whichever engine runs it: FAISS in the
worker (``app/index/domain.py:DomainIndex``, the default) or a shared Milvus collection
(``app/index/milvus.py:MilvusDomainIndex``, ``index_backend=milvus``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from app.index.base import IndexCalibration


class ItemIndex(Protocol):
    """Inner-product top-k over the items of one domain (bundle + registered)."""

    @property
    def kind(self) -> str: ...

    @property
    def calibration(self) -> IndexCalibration | None: ...

    @property
    def nprobe(self) -> int | None: ...

    def __len__(self) -> int: ...

    def __contains__(self, item_id: object) -> bool: ...

    def upsert(self, ids: Sequence[str], vectors: np.ndarray) -> None: ...

    def remove(self, ids: Sequence[str]) -> int: ...

    def vector(self, item_id: str) -> np.ndarray | None: ...

    def score(self, query: np.ndarray, ids: Sequence[str]) -> list[tuple[str, float]]: ...

    def search(
        self, queries: np.ndarray, k: int, *, exclude: Sequence[set[str]] | None = None
    ) -> list[list[tuple[str, float]]]: ...
