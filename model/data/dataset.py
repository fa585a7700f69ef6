"""In-memory form of a dataset folder (``interactions.csv`` + ``items.csv``).

Format (see ../shared/datasets/README.md): ``interactions.csv`` has header
``user_id,item_id,domain`` plus optional ``timestamp``, ``rating``; ``items.csv`` has
``item_id,domain,title,categories`` plus optional ``description``, ``image`` (a path
relative to the dataset folder). An ``item_id`` is unique across the whole dataset.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


class DatasetError(ValueError):
    """A dataset file is malformed. ``str(err)`` is one line naming file, line and problem."""

    def __init__(self, file: str | Path, line: int | None, problem: str) -> None:
        self.file = str(file)
        self.line = line
        self.problem = problem
        where = f"{self.file}:{line}" if line is not None else self.file
        super().__init__(f"{where}: {problem}")


@dataclass(frozen=True)
class ItemRecord:
    """One row of items.csv. ``image`` is an absolute path (or None when absent)."""

    item_id: str
    domain: str
    title: str = ""
    categories: str = ""
    description: str = ""
    image: Path | None = None

    def text(self) -> str:
        """The text the text encoder sees (:func:`item_text`)."""
        return item_text(self.title, self.categories, self.description)


def item_text(title: str, categories: str, description: str) -> str:
    """The text the text encoder sees for an item, in training and in serving alike:
    title + categories + description joined by ". " ("" if all are empty).

    ``categories`` is the stored form, parts joined by ``|`` as in items.csv (the service
    stores an API item's category list the same way), so an item re-registered through
    the API is encoded from exactly the text it was trained with.
    """
    parts = [p.strip() for p in (title, categories, description)]
    return ". ".join(p for p in parts if p)


@dataclass
class Interactions:
    """Columnar interactions, one row per positive (user, item) event.

    All arrays have the same length n. ``user``/``item``/``domain`` are numpy object
    arrays of ``str``; ``timestamp`` (int64) and ``rating`` (float32) are None when the
    column is absent.
    """

    user: np.ndarray
    item: np.ndarray
    domain: np.ndarray
    timestamp: np.ndarray | None = None
    rating: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.user)

    def select(self, mask: np.ndarray) -> Interactions:
        """Rows where the boolean ``mask`` is true (a new object; arrays are copied)."""
        return Interactions(
            user=self.user[mask],
            item=self.item[mask],
            domain=self.domain[mask],
            timestamp=None if self.timestamp is None else self.timestamp[mask],
            rating=None if self.rating is None else self.rating[mask],
        )


@dataclass
class Dataset:
    """A loaded, validated dataset. ``items`` keeps items.csv order."""

    root: Path
    items: dict[str, ItemRecord]
    interactions: Interactions
    name: str = field(default="")

    @property
    def domains(self) -> list[str]:
        """Sorted domain names that appear in items.csv."""
        return sorted({rec.domain for rec in self.items.values()})
