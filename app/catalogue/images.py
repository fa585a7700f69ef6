"""Item pictures for ``GET /v1/items/{id}/image``.

Registered items: a small WebP thumbnail of the uploaded image (:func:`thumbnail`, made
from the image the registration decoded and checked anyway), stored with the item, so
every replica serves it and it survives restarts; the uploaded bytes themselves are never
served. Bundle items: a file ``<item_id>.<ext>`` in ``item_images_dir`` (the demo catalogue's
``images/``). Only ids of bundle items are looked up (never a path from the client), the
resolved file must lie inside the directory (no links out of it), be at most
``max_image_bytes``, be an image Pillow recognises from its header as one of the formats
the API accepts and have at most ``max_image_pixels`` by its header (the limit uploads
have: a browser decodes what we serve); the content type comes from that format, not from
the name. A file that fails any of these costs only its own picture: the item lists say
``image: false`` and ``GET /v1/items/{id}/image`` answers 404 saying why; nothing Pillow
raises on a damaged or hostile file reaches the page.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

THUMBNAIL_SIDE = 160
"""Longest side of a registered item's stored thumbnail, pixels (a few KiB as WebP)."""
EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".gif")
CONTENT_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif"}


@dataclass(frozen=True)
class Picture:
    data: bytes
    content_type: str


class PictureRefused(Exception):
    """A picture file that exists but is not served; the message says why (bounded)."""


def inspect(data: bytes | Path, *, max_pixels: int | None = None) -> str:
    """The content type of an image (bytes or a file) from its header, without decoding
    it, or :class:`PictureRefused` saying why it is not servable."""
    source = io.BytesIO(data) if isinstance(data, bytes) else data
    try:
        with warnings.catch_warnings():
            # Our own pixel check below is the one that decides; PIL's warning between 1x
            # and 2x MAX_IMAGE_PIXELS would only repeat it in the logs on every listing.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(source, formats=list(CONTENT_TYPES)) as img:
                kind = CONTENT_TYPES.get(img.format or "")
                width, height = img.size
    except Image.DecompressionBombError:
        # PIL's own guard (Image.MAX_IMAGE_PIXELS, set from max_image_pixels at start-up).
        raise PictureRefused(_too_many_pixels(None, None, max_pixels)) from None
    except UnidentifiedImageError:
        raise PictureRefused(f"not an image in {', '.join(CONTENT_TYPES)}") from None
    except Exception as err:
        # Pillow's plugins raise OSError, ValueError, SyntaxError, EOFError, struct.error,
        # IndexError... on damaged headers; whatever it is, it costs only this picture.
        raise PictureRefused(f"the image header is damaged ({type(err).__name__})") from None
    if kind is None:
        raise PictureRefused(f"not an image in {', '.join(CONTENT_TYPES)}")
    if max_pixels is not None and width * height > max_pixels:
        raise PictureRefused(_too_many_pixels(width, height, max_pixels))
    return kind


def _too_many_pixels(width: int | None, height: int | None, max_pixels: int | None) -> str:
    size = f"is {width}x{height} = {width * height}" if width and height else "has too many"
    return f"the image {size} pixels; the limit is max_image_pixels={max_pixels}"


def sniff(data: bytes | Path) -> str | None:
    """The content type of an image (bytes or a file) from its header, without decoding
    it; None when it is not one of the accepted formats (or its header is damaged)."""
    try:
        return inspect(data)
    except PictureRefused:
        return None


def thumbnail(image: Image.Image) -> bytes:
    """A WebP thumbnail (longest side at most THUMBNAIL_SIDE) of a decoded image."""
    small = image.convert("RGB")
    small.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
    buf = io.BytesIO()
    small.save(buf, "WEBP", quality=80)
    return buf.getvalue()


class BundlePictures:
    """Pictures of bundle items, from a directory of ``<item_id>.<ext>`` files."""

    def __init__(self, directory: Path | None, max_bytes: int, max_pixels: int) -> None:
        self.root = directory.resolve() if directory is not None else None
        self.max_bytes = max_bytes
        self.max_pixels = max_pixels

    def path(self, item_id: str) -> Path | None:
        """The picture file of ``item_id`` (a bundle item id), or None."""
        if self.root is None:
            return None
        for ext in EXTENSIONS:
            try:
                candidate = (self.root / f"{item_id}{ext}").resolve()
            except (OSError, ValueError):  # NUL bytes, loops: not a picture
                return None
            if candidate.is_relative_to(self.root) and candidate.is_file():
                return candidate
        return None

    def has(self, item_id: str) -> bool:
        """A servable picture: within the limits and an accepted format (header only).
        Never raises: one bad file must not cost the page listing it."""
        path = self.path(item_id)
        if path is None:
            return False
        try:
            if path.stat().st_size > self.max_bytes:
                return False
            inspect(path, max_pixels=self.max_pixels)
        except (PictureRefused, OSError):
            return False
        return True

    def read(self, item_id: str) -> Picture | None:
        """The picture of ``item_id``; None without a file, :class:`PictureRefused` for a
        file that is not servable."""
        path = self.path(item_id)
        if path is None:
            return None
        try:
            with path.open("rb") as f:
                data = f.read(self.max_bytes + 1)
        except OSError as err:
            raise PictureRefused(f"the file cannot be read ({type(err).__name__})") from None
        if len(data) > self.max_bytes:
            raise PictureRefused(f"the file is larger than max_image_bytes={self.max_bytes}")
        return Picture(data, inspect(data, max_pixels=self.max_pixels))
