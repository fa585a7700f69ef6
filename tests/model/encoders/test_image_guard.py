"""Image preprocessing refuses hostile images before it spends anything on them:
exotic formats are not decoded, thin strips are not scaled up (issue 13)."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from model.encoders.image import (
    IMAGE_FORMATS,
    ImageRejected,
    check_geometry,
    open_rgb,
    preprocess,
    resize_center_crop,
)


def _file(tmp_path: Path, size: tuple[int, int], fmt: str) -> Path:
    path = tmp_path / f"img.{fmt.lower()}"
    Image.new("RGB", size, "red").save(path, fmt)
    return path


@pytest.mark.parametrize("size", [(100_000, 20), (20, 100_000), (40_000_000, 1)])
def test_resize_refuses_thin_strips_before_allocating(size: tuple[int, int]) -> None:
    # A lazily created image header: nothing is allocated until the resize would run.
    img = Image.new("L", (1, 1))
    img._size = size  # stands for an opened, not yet decoded file
    with pytest.raises(ImageRejected, match="aspect ratio"):
        resize_center_crop(img, 224)


def test_resize_still_handles_ordinary_shapes() -> None:
    out = resize_center_crop(Image.new("RGB", (640, 480)), 224)
    assert out.size == (224, 224)


@pytest.mark.parametrize("fmt", ["TGA", "PCX", "TIFF", "BMP", "SGI"])
def test_exotic_formats_not_decoded(tmp_path: Path, fmt: str) -> None:
    with pytest.raises(OSError, match="cannot identify"):
        open_rgb(_file(tmp_path, (32, 32), fmt))


@pytest.mark.parametrize("fmt", IMAGE_FORMATS)
def test_web_formats_decoded(tmp_path: Path, fmt: str) -> None:
    assert preprocess(_file(tmp_path, (300, 200), fmt)).shape == (3, 224, 224)


def test_strip_file_refused_from_its_header(tmp_path: Path) -> None:
    path = tmp_path / "strip.png"
    Image.new("L", (100_000, 20)).save(path)
    with pytest.raises(ImageRejected):
        preprocess(path)


def test_check_geometry_limits() -> None:
    check_geometry(2240, 224)
    with pytest.raises(ImageRejected):
        check_geometry(2241, 224)
    with pytest.raises(ImageRejected, match="pixels"):
        check_geometry(5000, 5000, max_pixels=1_000_000)
    with pytest.raises(ImageRejected, match="no pixels"):
        check_geometry(0, 5)
