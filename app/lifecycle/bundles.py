"""Which bundle directories an admin reload may load: only those inside ``bundles_dir``.

A reload request names a directory; it is resolved (symlinks and ``..`` followed) and
must lie inside the resolved bundles directory, so a leaked admin key still cannot make
the service read arbitrary paths. Every refusal is a 422 with a short message that does
not echo the request at length.
"""

from __future__ import annotations

from pathlib import Path

from app.api.errors import InvalidInput


def bundle_inside(requested: str, root: Path) -> Path:
    """``requested`` (absolute, or relative to ``root``), if it resolves to a directory
    inside ``root``: returned as ``root / <resolved path relative to root>``."""
    shown = requested if len(requested) <= 80 else requested[:77] + "..."
    if "\x00" in requested:
        raise InvalidInput("bundle_path must not contain NUL characters")
    try:
        base = root.resolve()
        path = (base / requested).resolve()
    except (OSError, RuntimeError, ValueError) as err:  # too long, symlink loop...
        raise InvalidInput(
            f"bundle_path {shown!r} cannot be resolved ({type(err).__name__})"
        ) from None
    if path == base or not path.is_relative_to(base):
        raise InvalidInput(
            f"bundle_path {shown!r} is not a directory inside the bundles directory (bundles_dir)"
        )
    return root / path.relative_to(base)  # as configured: reload status shows no host paths
