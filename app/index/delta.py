"""The in-memory part of a domain index (app/index/domain.py): vectors upserted after the build.

An exact ``IndexIDMap2(IndexFlatIP)`` over the items registered through the API (and
replacements of bundle items). It stays small (a rebuild at the next model load folds it
into the base), so exact search over it costs little and its results are exact whatever
the base's kind. Labels continue after the base's rows and are never reused, so a label
names one vector for the index's lifetime. Not thread-safe: the owner holds its lock.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import faiss
import numpy as np


class DeltaIndex:
    def __init__(self, dim: int, first_label: int) -> None:
        self.dim = dim
        self.index: Any = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        self.ids: dict[int, str] = {}  # label -> id
        self.labels: dict[str, int] = {}  # id -> label
        self._next = first_label

    def __len__(self) -> int:
        return len(self.labels)

    def add(self, ids: Sequence[str], x: np.ndarray) -> None:
        """Add ``ids`` (none of them present: the owner removed them first)."""
        labels = np.arange(self._next, self._next + len(ids), dtype=np.int64)
        self._next += len(ids)
        self.index.add_with_ids(x, labels)
        for item_id, label in zip(ids, labels.tolist(), strict=True):
            self.ids[label] = item_id
            self.labels[item_id] = label

    def remove(self, ids: Sequence[str]) -> int:
        gone = [self.labels.pop(i) for i in set(ids) if i in self.labels]
        if not gone:
            return 0
        for label in gone:
            del self.ids[label]
        sel = np.array(gone, dtype=np.int64)
        # IndexIDMap tests every stored id for membership: a hash set, not a list scan.
        return int(self.index.remove_ids(faiss.IDSelectorBatch(sel.size, faiss.swig_ptr(sel))))

    def search(self, q: np.ndarray, want: int) -> tuple[np.ndarray, np.ndarray]:
        scores, labels = self.index.search(q, min(want, len(self)))
        return scores, labels

    def reconstruct(self, labels: np.ndarray) -> np.ndarray:
        return np.asarray(self.index.reconstruct_batch(labels), dtype=np.float32)
