"""Identifiers (user, item, domain ids) as the API accepts them.

An id is normalised to Unicode NFC, so ``"cafe\\u0301"`` and ``"caf\\u00e9"`` name the same
item however the client's keyboard composed it, and refused when it could mislead a
person or a path: ``.`` and ``..``, control characters (C0, DEL, C1), format characters
(bidi overrides and isolates, zero-width characters, BOM), line/paragraph separators and
lone surrogates. The limits are static (schema), so the OpenAPI document states them.
"""

from __future__ import annotations

import unicodedata
from typing import Annotated

from pydantic import AfterValidator, StringConstraints

MAX_ID_CHARS = 256
MAX_LIST_ITEMS = 10_000
"""Hard ceiling of every id list in a body; the configured limits (max_history,
max_batch) are checked by the service and cannot exceed it."""

ID_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]+$"
"""Control characters are refused by the schema too, so generated clients know."""
ITEM_ID_PATTERN = r"^[^\x00-\x1f\x7f-\x9f/]+$"
"""Registered item ids also exclude "/" so every id is addressable as /v1/items/{id}."""

_REFUSED_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Zl", "Zp"}


def check_id(value: str) -> str:
    """``value`` in NFC, or ``ValueError`` saying why it is not an acceptable id."""
    text = unicodedata.normalize("NFC", value)
    if text in (".", ".."):
        raise ValueError('"." and ".." are not valid ids')
    for ch in text:
        category = unicodedata.category(ch)
        if category in _REFUSED_CATEGORIES:
            raise ValueError(
                f"ids must not contain control, format (bidi, zero-width) or separator "
                f"characters; found U+{ord(ch):04X} ({category})"
            )
    if len(text) > MAX_ID_CHARS:  # NFC may lengthen a string (rarely)
        raise ValueError(f"id is longer than {MAX_ID_CHARS} characters")
    return text


Id = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_ID_CHARS, pattern=ID_PATTERN),
    AfterValidator(check_id),
]
"""A user id, domain or item id as given in a body or query."""

ItemId = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_ID_CHARS, pattern=ITEM_ID_PATTERN),
    AfterValidator(check_id),
]
"""An id of a registered item (no "/")."""
