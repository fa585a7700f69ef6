"""Fixtures for the data tests: small datasets written to tmp_path, and the real data.

``make_dataset(interactions, items, ...)`` writes a dataset folder from Python rows;
``write_raw(interactions_text, items_text)`` writes the two files verbatim (for
malformed-file tests); ``synthetic_dataset(...)`` writes a seeded random multi-domain
dataset large enough to survive a 5-core. ``SHARED`` is ``../shared`` next to the repo;
the real-data fixtures (``arts_office``, ``anchor_dir``) skip cleanly when it is absent.
Tests use fixtures only (never ``from conftest import``: with several rootdir-style
conftest files the module name ``conftest`` is ambiguous).
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from model.data.dataset import Dataset
from model.data.loading import load_dataset

SHARED = Path(__file__).resolve().parents[3].parent / "shared"
ARTS_OFFICE = SHARED / "datasets" / "amazon-arts-office"
ANCHOR = SHARED / "anchors" / "inmo-official"

Row = Sequence[object]


def write_csv(path: Path, header: Sequence[str], rows: Sequence[Row]) -> None:
    """Write one CSV with the csv module (quotes whatever needs quoting)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)


def _synthetic_rows(
    *,
    domains: Sequence[str] = ("a", "b"),
    n_users: int = 60,
    n_items: int = 30,
    per_user: tuple[int, int] = (6, 14),
    seed: int = 0,
    p_both: float = 0.6,
) -> tuple[list[tuple[str, str, str]], list[tuple[str, str, str, str]]]:
    """Random (interactions, items) rows: ``n_items`` items per domain, each user in the
    first domain or, with probability ``p_both``, in all of them; ids are zero-padded so
    string order is numeric order. Popularity is skewed so the k-core removes some items."""
    rng = np.random.default_rng(seed)
    items = [
        (f"{d}{j:03d}", d, f"{d} item {j}", f"cat{j % 4}") for d in domains for j in range(n_items)
    ]
    weights = 1.0 / np.arange(1, n_items + 1) ** 0.7
    weights /= weights.sum()
    inter: list[tuple[str, str, str]] = []
    for u in range(n_users):
        mine = list(domains) if rng.random() < p_both else [domains[u % len(domains)]]
        for d in mine:
            k = int(rng.integers(per_user[0], per_user[1] + 1))
            for j in rng.choice(n_items, size=k, replace=False, p=weights):
                inter.append((f"u{u:03d}", f"{d}{j:03d}", d))
    return inter, items


@pytest.fixture
def make_dataset(tmp_path: Path) -> Callable[..., Path]:
    """``make_dataset(interactions, items, *, name, inter_header, item_header) -> folder``."""

    def make(
        interactions: Sequence[Row],
        items: Sequence[Row],
        *,
        name: str = "ds",
        inter_header: Sequence[str] = ("user_id", "item_id", "domain"),
        item_header: Sequence[str] = ("item_id", "domain", "title", "categories"),
    ) -> Path:
        root = tmp_path / name
        write_csv(root / "interactions.csv", inter_header, interactions)
        write_csv(root / "items.csv", item_header, items)
        return root

    return make


@pytest.fixture
def write_raw(tmp_path: Path) -> Callable[..., Path]:
    """``write_raw(interactions_text, items_text, name="raw") -> folder``, files verbatim."""

    def write(interactions_text: str | None, items_text: str | None, name: str = "raw") -> Path:
        root = tmp_path / name
        root.mkdir(parents=True, exist_ok=True)
        if interactions_text is not None:
            (root / "interactions.csv").write_text(interactions_text, encoding="utf-8")
        if items_text is not None:
            (root / "items.csv").write_text(items_text, encoding="utf-8")
        return root

    return write


@pytest.fixture
def synthetic_dataset(make_dataset: Callable[..., Path]) -> Callable[..., Path]:
    """``synthetic_dataset(**synthetic_rows kwargs) -> folder``."""

    def make(name: str = "synth", **kwargs: Any) -> Path:
        inter, items = _synthetic_rows(**kwargs)
        return make_dataset(inter, items, name=name)

    return make


@pytest.fixture
def synthetic_rows() -> Callable[..., tuple[list[tuple[str, str, str]], list[Row]]]:
    """The row generator behind ``synthetic_dataset`` (to edit rows before writing)."""
    return _synthetic_rows


@pytest.fixture(scope="session")
def anchor_dir() -> Path:
    """``../shared/anchors/inmo-official`` (make_split.py + the reference splits)."""
    if not (ANCHOR / "make_split.py").is_file():
        pytest.skip(f"{ANCHOR} is absent")
    return ANCHOR


@pytest.fixture(scope="session")
def arts_office() -> Dataset:
    """The real amazon-arts-office dataset (loaded once per session)."""
    if not ARTS_OFFICE.is_dir():
        pytest.skip(f"{ARTS_OFFICE} is absent")
    return load_dataset(ARTS_OFFICE)
