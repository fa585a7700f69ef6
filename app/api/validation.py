"""Validation errors as a small answer, whatever the input.

A body with a million bad values yields a million pydantic errors, each quoting its
input; sent back as they are, a 2 MB request answered 142 MB (docs/results/reliability.md,
"Security"). The answer names at most ``MAX_ERRORS`` of them, with locations and messages
cut to a few dozen characters and no input echoed, plus how many there were in all.
The service's own errors name the values they refuse through :func:`shown`, bounded too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

MAX_ERRORS = 5
MAX_LOC_PART_CHARS = 40
MAX_MSG_CHARS = 200


MAX_SHOWN_CHARS = 60
"""Longest value (its repr) an error message shows of what a request sent."""


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def shown(value: object) -> str:
    """``repr(value)`` cut to :data:`MAX_SHOWN_CHARS`: how every error message names a value
    taken from a request (an id, ``n``, a name), so no answer echoes unbounded input."""
    if isinstance(value, int) and abs(value) >= 10**MAX_SHOWN_CHARS:
        return f"a {len(str(abs(value)))}-digit number"  # repr itself would be the echo
    return _cut(repr(value), MAX_SHOWN_CHARS)


def summarise(errors: Sequence[Any]) -> dict[str, Any]:
    """``{"detail": "...", "errors": [...], "error_count": n}`` for a list of pydantic
    errors (dicts with loc, msg, type); only the first ``MAX_ERRORS`` are read."""
    shown = []
    for e in list(errors[:MAX_ERRORS]):
        loc = [
            p if isinstance(p, int) else _cut(str(p), MAX_LOC_PART_CHARS) for p in e.get("loc", ())
        ]
        shown.append(
            {
                "loc": loc,
                "msg": _cut(str(e.get("msg", "invalid")), MAX_MSG_CHARS),
                "type": _cut(str(e.get("type", "")), MAX_LOC_PART_CHARS),
            }
        )
    parts = [
        f"{'.'.join(str(p) for p in e['loc'] if p != 'body') or 'body'}: {e['msg']}" for e in shown
    ]
    more = len(errors) - len(shown)
    if more > 0:
        parts.append(f"and {more} more errors")
    return {"detail": "; ".join(parts), "errors": shown, "error_count": len(errors)}
