"""Shared fixtures: the real encoders (loaded once per session), images, tiny datasets."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw

from model.data.dataset import Dataset, Interactions, ItemRecord
from model.encoders.base import ContentEncoder
from model.encoders.factory import create_encoder


@pytest.fixture(scope="session")
def text_encoder() -> ContentEncoder:
    """The real MiniLM encoder; create_encoder shares it process-wide (the CLI reuses it)."""
    return create_encoder("minilm-l6-v2")


@pytest.fixture(scope="session")
def image_encoder() -> ContentEncoder:
    return create_encoder("efficientnet-lite0")


@pytest.fixture(scope="session")
def photo_path() -> Path:
    """A real photograph that ships with matplotlib (a project dependency): Grace Hopper."""
    import matplotlib

    path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    if not path.is_file():
        pytest.skip(f"matplotlib sample photo not found at {path}")
    return path


def render_scene(seed: int, size: tuple[int, int] = (320, 240)) -> Image.Image:
    """A synthetic 'photo': gradient background plus random filled shapes (deterministic)."""
    rng = np.random.default_rng(seed)
    w, h = size
    base = rng.integers(0, 256, size=3)
    yy, xx = np.mgrid[0:h, 0:w]
    grad = xx[..., None] * rng.uniform(-0.5, 0.5, 3) + yy[..., None] * rng.uniform(-0.5, 0.5, 3)
    img = Image.fromarray(np.clip(base + grad, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(img)
    for _ in range(12):
        x0, y0 = int(rng.integers(0, w - 20)), int(rng.integers(0, h - 20))
        x1, y1 = x0 + int(rng.integers(10, w // 2)), y0 + int(rng.integers(10, h // 2))
        color = tuple(int(c) for c in rng.integers(0, 256, size=3))
        if rng.random() < 0.5:
            draw.ellipse((x0, y0, x1, y1), fill=color)
        else:
            draw.rectangle((x0, y0, x1, y1), fill=color)
    return img


@pytest.fixture(scope="session")
def scene() -> Callable[..., Image.Image]:
    return render_scene


MakeDataset = Callable[[Sequence[dict[str, Any]]], Dataset]


@pytest.fixture
def make_dataset(tmp_path: Path) -> MakeDataset:
    """``make_dataset([{"item_id": ..., "title": ..., "image": Path|None}, ...])`` -> Dataset.

    Built straight from the dataclasses (no CSV parsing); domain defaults to "d1".
    """

    def make(rows: Sequence[dict[str, Any]]) -> Dataset:
        items = {}
        for r in rows:
            rec = ItemRecord(**{"domain": "d1", **r})
            items[rec.item_id] = rec
        empty = np.array([], dtype=object)
        return Dataset(tmp_path, items, Interactions(empty, empty.copy(), empty.copy()), "toy")

    return make


class FakeEncoder(ContentEncoder):
    """Deterministic stand-in: vector = normalised hash-seeded noise; records what it saw."""

    def __init__(self, name: str = "fake-text", modality: str = "text", dim: int = 8) -> None:
        self.name, self.modality, self.dim = name, modality, dim
        self.seen: list[Any] = []
        self.fail_after: int | None = None  # raise RuntimeError once this many were encoded

    def encode(
        self, inputs: Sequence[Any], *, batch_size: int = 64, progress: bool = False
    ) -> np.ndarray:
        if self.fail_after is not None and len(self.seen) + len(inputs) > self.fail_after:
            raise RuntimeError("simulated crash")
        out = np.zeros((len(inputs), self.dim), dtype=np.float32)
        for k, x in enumerate(inputs):
            if self.modality == "image":
                data = Path(x).read_bytes()  # like a real image encoder: must be readable
                if not data.startswith(b"\x89PNG"):
                    raise OSError("cannot identify image file")
            else:
                data = str(x).encode()
            seed = int(hashlib.sha256(data).hexdigest()[:12], 16)
            v = np.random.default_rng(seed).normal(size=self.dim)
            out[k] = v / np.linalg.norm(v)
        self.seen.extend(inputs)
        return out


@pytest.fixture
def fake_text() -> FakeEncoder:
    return FakeEncoder()


@pytest.fixture
def fake_image() -> FakeEncoder:
    return FakeEncoder("fake-image", "image", 4)
