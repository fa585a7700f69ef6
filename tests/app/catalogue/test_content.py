"""Image/base64/text checks that run before any content reaches an encoder."""

from __future__ import annotations

import base64
import io
import struct
import zlib

import pytest
from PIL import Image

from app.api.errors import InvalidInput, PayloadTooLarge
from app.catalogue.content import decode_base64_image, open_image
from app.lifecycle.categories import (
    CategoryIndex,
    category_matches,
    join_categories,
    split_categories,
)
from model.columns import CategoryColumn
from model.data.dataset import item_text


def png_bytes(size: tuple[int, int] = (8, 8), color: str = "red", fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format=fmt)
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height`` (a decompression-bomb header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def test_valid_image_decodes_to_rgb() -> None:
    img = open_image(png_bytes((5, 3)), max_bytes=10_000, max_pixels=100)
    assert img.mode == "RGB" and img.size == (5, 3)


def test_base64_with_data_url_prefix() -> None:
    raw = png_bytes()
    text = "data:image/png;base64," + base64.b64encode(raw).decode()
    assert decode_base64_image(text, max_bytes=10_000) == raw


@pytest.mark.parametrize("text", ["not base64!!", "abc", ""])
def test_malformed_base64_is_422(text: str) -> None:
    with pytest.raises(InvalidInput, match=r"base64|empty"):
        decode_base64_image(text, max_bytes=10_000)


def test_base64_too_large_is_413_before_decoding() -> None:
    with pytest.raises(PayloadTooLarge, match="max_image_bytes"):
        decode_base64_image("A" * 4000, max_bytes=1000)


def test_image_bytes_limit() -> None:
    with pytest.raises(PayloadTooLarge, match="max_image_bytes"):
        open_image(png_bytes((64, 64)), max_bytes=10, max_pixels=10**6)


def test_pixel_bomb_header_is_413_without_decoding() -> None:
    with pytest.raises(PayloadTooLarge, match="max_image_pixels"):
        open_image(png_header_only(100_000, 100_000), max_bytes=10**6, max_pixels=40_000_000)


def test_non_image_bytes_are_422() -> None:
    with pytest.raises(InvalidInput, match="not in an accepted format"):
        open_image(b"hello, this is text", max_bytes=10**6, max_pixels=10**6)


def test_truncated_image_is_422() -> None:
    raw = png_bytes((64, 64), color="blue", fmt="JPEG")
    with pytest.raises(InvalidInput, match="truncated or corrupt"):
        open_image(raw[: len(raw) // 2], max_bytes=10**6, max_pixels=10**6)


def test_text_and_categories() -> None:
    cats = join_categories([" office ", "pens", ""])
    assert cats == "office|pens" and split_categories(cats) == ["office", "pens"]
    assert item_text("Red pen", cats, "") == "Red pen. office|pens"
    assert category_matches("Office Products|Pens & Pencils", "pens")
    assert category_matches("office products writing", "office")
    assert not category_matches("arts|paint", "office")


def test_category_index_finds_what_category_matches_finds() -> None:
    cats = [
        "Office Products | Paper > Notebooks",
        "office products|Pens",
        "Kitchen > Knives",
        "",
        "Office Products | Paper > Notebooks",
        "  Paper > Cards ",
        "Ünïcode > Äpfel",
    ] * 3
    plain, column = CategoryIndex(cats), CategoryIndex.of(CategoryColumn.from_strings(cats))
    prefixes = [
        "office",
        "office products",
        "paper",
        "paper > n",
        "pens",
        "kitchen >",
        "k",
        "",
        "ünï",
        "zzz",
        "notebooks",
        "paper > cards",
    ]
    # the index of a list and of a dictionary-encoded column (the serving cache's) agree
    for index in (plain, column):
        for prefix in prefixes:
            want = [row for row, c in enumerate(cats) if category_matches(c, prefix)]
            rows = index.rows(prefix)
            assert rows is not None and rows.tolist() == want, prefix
            if want:  # the cheap count never undercounts: a limit below the answer refuses
                assert index.rows(prefix, at_most=len(want) - 1) is None
            assert index.rows(prefix, at_most=len(cats)) is not None
    for empty_index in (CategoryIndex([]), CategoryIndex.of(CategoryColumn.from_strings([]))):
        empty = empty_index.rows("a")
        assert empty is not None and empty.size == 0
