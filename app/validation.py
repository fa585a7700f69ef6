"""Validation errors as a small answer, whatever the input.

A body with a million bad values yields a million pydantic errors, each quoting its
input; sent back as they are, a 2 MB request answered 142 MB (docs/results/reliability.md,
"Security"). The answer names at most ``MAX_ERRORS`` of them, with locations and messages
cut to a few dozen characters and no input echoed, plus how many there were in all.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

MAX_ERRORS = 5
MAX_LOC_PART_CHARS = 40
MAX_MSG_CHARS = 200


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


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
