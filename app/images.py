"""Item pictures for ``GET /v1/items/{id}/image``.

Registered items: a small WebP thumbnail of the uploaded image (:func:`thumbnail`, made
from the image the registration decoded and checked anyway), stored with the item, so
every replica serves it and it survives restarts; the uploaded bytes themselves are never
served. Bundle items: a file ``<item_id>.<ext>`` in ``item_images_dir`` (the demo catalogue's
``images/``). Only ids of bundle items are looked up (never a path from the client), the
resolved file must lie inside the directory (no links out of it), be at most
``max_image_bytes`` and be an image Pillow recognises from its header as one of the
formats the API accepts; the content type comes from that format, not from the name.
"""

from __future__ import annotations

import io
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


def sniff(data: bytes | Path) -> str | None:
    """The content type of an image (bytes or a file) from its header, without decoding
    it; None when it is not one of the accepted formats."""
    source = io.BytesIO(data) if isinstance(data, bytes) else data
    try:
        with Image.open(source, formats=list(CONTENT_TYPES)) as img:
            return CONTENT_TYPES.get(img.format or "")
    except (UnidentifiedImageError, OSError, ValueError):
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

    def __init__(self, directory: Path | None, max_bytes: int) -> None:
        self.root = directory.resolve() if directory is not None else None
        self.max_bytes = max_bytes

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
        """A servable picture: within the size limit and an accepted format (header only)."""
        path = self.path(item_id)
        return (
            path is not None and path.stat().st_size <= self.max_bytes and sniff(path) is not None
        )

    def read(self, item_id: str) -> Picture | None:
        path = self.path(item_id)
        if path is None:
            return None
        with path.open("rb") as f:
            data = f.read(self.max_bytes + 1)
        if len(data) > self.max_bytes:
            return None
        kind = sniff(data)
        return None if kind is None else Picture(data, kind)
