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

from PIL import Image, UnidentifiedImageError

from app.api.errors import InvalidInput, PayloadTooLarge
from model.encoders.imageguard import (
    IMAGE_FORMATS,
    MAX_ASPECT_RATIO,
    ImageRejected,
    check_geometry,
)


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
