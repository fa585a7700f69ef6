"""Decoding and checking a new item's content (image bytes, base64, text) before encoding.

Every check runs *before* the expensive step it protects: base64 length before decoding,
byte size before opening, the header's pixel count before decompressing (decompression
bombs), and the full decode inside a guard so truncated or corrupt files are a 422, not a
500 from deep inside PIL.
"""

from __future__ import annotations

import base64
import binascii
import io
import warnings
from bisect import bisect_left
from collections.abc import Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from app.errors import InvalidInput, PayloadTooLarge
from model.encoders.imageguard import (
    IMAGE_FORMATS,
    MAX_ASPECT_RATIO,
    ImageRejected,
    check_geometry,
)

CATEGORY_SEPARATOR = "|"


def decode_base64_image(data: str, *, max_bytes: int) -> bytes:
    """Bytes of a base64 image (a ``data:image/...;base64,`` prefix is accepted)."""
    text = data.strip()
    if text.startswith("data:"):
        _, _, text = text.partition(",")
    # 4 base64 characters carry 3 bytes: refuse oversized input before allocating it.
    if len(text) * 3 // 4 > max_bytes + 3:
        raise PayloadTooLarge(f"image is larger than max_image_bytes={max_bytes} bytes")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as err:
        raise InvalidInput(f"image_base64 is not valid base64 ({err})") from None
    if not raw:
        raise InvalidInput("image_base64 is empty")
    return raw


DRAFT_SIZE = 448
"""JPEGs decode at the smallest 1/2^k scale still covering this (Image.draft): above any
encoder's input size, far below a photo's full size."""

DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, OverflowError, MemoryError)
"""What a hostile file can make Pillow raise while decoding (the bomb error aside)."""


def open_image(
    raw: bytes, *, max_bytes: int, max_pixels: int, max_aspect: float = MAX_ASPECT_RATIO
) -> Image.Image:
    """A fully decoded RGB image, or a 413/422 saying what is wrong with ``raw``.

    Only :data:`IMAGE_FORMATS` are decoded; the header's size is checked (pixels, aspect
    ratio) before any pixel is.
    """
    if len(raw) > max_bytes:
        raise PayloadTooLarge(
            f"image is {len(raw)} bytes; the limit is max_image_bytes={max_bytes}"
        )
    try:
        with warnings.catch_warnings():
            # PIL warns (not raises) between 1x and 2x MAX_IMAGE_PIXELS; our own check
            # below is the authoritative one, so keep the warning out of the logs.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(raw), formats=IMAGE_FORMATS)
    except Image.DecompressionBombError:
        raise _too_many_pixels(max_pixels) from None
    except UnidentifiedImageError:
        raise InvalidInput(
            f"image is not in an accepted format ({', '.join(IMAGE_FORMATS)})"
        ) from None
    except DECODE_ERRORS as err:
        raise InvalidInput(f"image data is truncated or corrupt ({_short(err)})") from None
    width, height = img.size
    # Image.open only parsed the header: reject bombs before decompressing any pixel.
    if width * height > max_pixels:
        raise PayloadTooLarge(
            f"image is {width}x{height} = {width * height} pixels; "
            f"the limit is max_image_pixels={max_pixels}"
        )
    try:
        check_geometry(width, height, max_aspect=max_aspect)
    except ImageRejected as err:
        raise InvalidInput(f"{err} (max_image_aspect_ratio)") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            if img.format == "JPEG":
                img.draft("RGB", (DRAFT_SIZE, DRAFT_SIZE))
            img.load()
            return img.convert("RGB")
    except Image.DecompressionBombError:
        raise _too_many_pixels(max_pixels) from None
    except DECODE_ERRORS as err:
        raise InvalidInput(f"image data is truncated or corrupt ({_short(err)})") from None


def _short(err: BaseException) -> str:
    text = f"{type(err).__name__}: {err}"
    return text if len(text) <= 200 else text[:197] + "..."


def _too_many_pixels(max_pixels: int) -> PayloadTooLarge:
    # PIL's own bomb check (MAX_IMAGE_PIXELS) fired first: same answer as ours.
    return PayloadTooLarge(f"image has too many pixels; the limit is max_image_pixels={max_pixels}")


def join_categories(categories: list[str]) -> str:
    """Stored form of a category list (the store keeps one string per item)."""
    return CATEGORY_SEPARATOR.join(c.strip() for c in categories if c.strip())


def split_categories(categories: str) -> list[str]:
    return [c.strip() for c in categories.split(CATEGORY_SEPARATOR) if c.strip()]


def category_matches(categories: str, prefix: str) -> bool:
    """Case-insensitive prefix match on the whole category string or any ``|`` part.

    ``prefix`` must already be lower-cased and stripped.
    """
    text = categories.lower()
    if text.startswith(prefix):
        return True
    return any(part.strip().startswith(prefix) for part in text.split(CATEGORY_SEPARATOR))


def _category_keys(categories: str) -> set[str]:
    """The strings a prefix is matched against: the whole string and each ``|`` part."""
    text = categories.lower()
    return {text} | {part.strip() for part in text.split(CATEGORY_SEPARATOR)}


class CategoryIndex:
    """Rows of a fixed catalogue whose categories match a prefix, without a scan.

    Same matching as :func:`category_matches`. Catalogues repeat a few thousand category
    strings over up to millions of items, so the sorted keys come from the distinct
    strings and each maps to the rows that carry it: a lookup is a binary search plus the
    size of the answer.
    """

    def __init__(self, categories: Sequence[str]) -> None:
        rows_of: dict[str, list[int]] = {}
        for row, cats in enumerate(categories):
            rows_of.setdefault(cats, []).append(row)
        distinct = list(rows_of)
        self._rows = [np.asarray(rows_of[c], dtype=np.int64) for c in distinct]
        pairs = sorted((key, k) for k, c in enumerate(distinct) for key in _category_keys(c))
        self._keys = [key for key, _ in pairs]
        self._distinct = [k for _, k in pairs]

    def rows(self, prefix: str, *, at_most: int | None = None) -> np.ndarray | None:
        """Sorted rows whose categories match ``prefix`` (lower-cased and stripped); None
        when more than ``at_most`` might (counted before the union, so that is cheap)."""
        lo = bisect_left(self._keys, prefix)
        hi = bisect_left(self._keys, prefix + "\U0010ffff", lo)
        picked = {self._distinct[j] for j in range(lo, hi)}
        if at_most is not None and sum(len(self._rows[k]) for k in picked) > at_most:
            return None
        if not picked:
            return np.empty(0, dtype=np.int64)
        return np.unique(np.concatenate([self._rows[k] for k in picked]))
