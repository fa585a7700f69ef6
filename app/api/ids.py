"""Identifiers (user, item, domain ids) as the API accepts them.

Every id a request carries (bodies, queries, path parameters) is normalised by
:func:`check_id`, through the :data:`Id` and :data:`ItemId` types the schemas and routers
use: Unicode NFKC, then whitespace trimmed at both ends (:func:`model.data.ids.normalise_id`,
which the dataset loader applies too, so bundle ids are in the same form). So
``"office_0579 "``, ``"ｏｆｆｉｃｅ＿０５７９"`` (fullwidth) and ``"cafe\\u0301"``/``"caf\\u00e9"``
name one id however the client's keyboard or form produced it. Case is kept: ids come from
other systems where ``Ab`` and ``ab`` may be two people (see model/data/ids.py).

An id is then refused when it could mislead a person or a path: empty after trimming, ``.``
and ``..``, control characters (C0, DEL, C1), format characters (bidi overrides and
isolates, zero-width characters, BOM), line/paragraph separators and lone surrogates.
Registered item ids also exclude ``/`` (checked after NFKC, which turns ``／`` into ``/``)
so each is one path segment under ``/v1/items/``. User ids may contain ``/``: the user
routes take the rest of the path (``DELETE /v1/users/acme%2F42`` erases ``acme/42``).
The limits are static (schema), so the OpenAPI document states them.
"""

from __future__ import annotations

import hashlib
import unicodedata
from typing import Annotated

from pydantic import AfterValidator, StringConstraints

from model.data.ids import is_normal_id, normalise_id

__all__ = ["is_normal_id", "normalise_id"]

MAX_ID_CHARS = 256
MAX_LIST_ITEMS = 10_000
"""Hard ceiling of every id list in a body; the configured limits (max_history,
max_batch) are checked by the service and cannot exceed it."""

ID_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]+$"
"""Control characters are refused by the schema too, so generated clients know."""
ITEM_ID_PATTERN = r"^[^\x00-\x1f\x7f-\x9f/]+$"
"""Registered item ids also exclude "/" so every id is addressable as /v1/items/{id}."""

_REFUSED_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Zl", "Zp"}


def _check_text(text: str) -> str:
    if not text:
        raise ValueError("id is empty (or only whitespace)")
    if text in (".", ".."):
        raise ValueError('"." and ".." are not valid ids')
    for ch in text:
        category = unicodedata.category(ch)
        if category in _REFUSED_CATEGORIES:
            raise ValueError(
                f"ids must not contain control, format (bidi, zero-width) or separator "
                f"characters; found U+{ord(ch):04X} ({category})"
            )
    if len(text) > MAX_ID_CHARS:  # NFKC may lengthen a string
        raise ValueError(f"id is longer than {MAX_ID_CHARS} characters")
    return text


def check_id(value: str) -> str:
    """``value`` in normal form (NFKC, trimmed), or ``ValueError`` saying why it is not an
    acceptable id."""
    return _check_text(normalise_id(value))


def check_item_id(value: str) -> str:
    """:func:`check_id` for a registered item's id, which must not contain "/"."""
    text = check_id(value)
    if "/" in text:
        raise ValueError('registered item ids must not contain "/"')
    return text


def stored_forms(value: str) -> list[str]:
    """The ids ``value`` names in a store: its normal form first, then the form ids were
    stored in before ids were NFKC-normalised and trimmed (NFC only: ``"acme "``), when
    that differs and is a valid id. An erasure erases both, so every id an earlier
    version accepted stays erasable."""
    forms = [check_id(value)]
    try:
        legacy = _check_text(unicodedata.normalize("NFC", value))
    except ValueError:
        return forms
    return forms if legacy == forms[0] else [*forms, legacy]


def check_raw_id(value: str) -> str:
    """``value`` as sent if :func:`check_id` accepts it (for :func:`stored_forms`)."""
    check_id(value)
    return value


Id = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_ID_CHARS, pattern=ID_PATTERN),
    AfterValidator(check_id),
]
"""A user id, domain or item id as given in a body, query or path."""

ItemId = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_ID_CHARS, pattern=ITEM_ID_PATTERN),
    AfterValidator(check_item_id),
]
"""An id of a registered item (no "/")."""

RawId = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_ID_CHARS, pattern=ID_PATTERN),
    AfterValidator(check_raw_id),
]
"""An acceptable id kept as sent (NFKC is not applied): the erasure route reads its
:func:`stored_forms`."""


def key_source(given: str | None) -> str:
    """A short pseudonym of an API key (sha256 prefix; "no key" has one too): what the store
    files a key's idempotency records and popularity counts under, never the key."""
    return hashlib.sha256((given or "").encode()).hexdigest()[:16]
