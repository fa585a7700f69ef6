"""What images the encoders accept, checked from the header alone (no torch here, so the
service can import its upload guards without loading torch: ``micrec serve``'s supervisor
process never needs it)."""

from __future__ import annotations

IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "GIF")
"""The only formats decoded (``Image.open(formats=...)``): the web's photo formats. Pillow
knows dozens more (TGA, PCX, SGI, DDS, JPEG 2000, TIFF, EPS, which runs Ghostscript...),
each more decoder code reachable by anyone who can upload an image."""

MAX_ASPECT_RATIO = 10.0
"""Default long side / short side limit: the short side is scaled to the input size, so
the long side of a thin strip would become enormous (100000x20 -> 1.1 M x 224)."""


class ImageRejected(ValueError):
    """An image this library refuses to decode or resize (format, shape, size)."""


def check_geometry(
    width: int, height: int, *, max_pixels: int | None = None, max_aspect: float = MAX_ASPECT_RATIO
) -> None:
    """Refuse an image by its header size before any pixel is decoded or resized."""
    if width <= 0 or height <= 0:
        raise ImageRejected("image has no pixels")
    if max_pixels is not None and width * height > max_pixels:
        raise ImageRejected(
            f"image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}"
        )
    if max(width, height) / min(width, height) > max_aspect:
        raise ImageRejected(
            f"image is {width}x{height}; its aspect ratio is above the limit of {max_aspect:g}:1"
        )
