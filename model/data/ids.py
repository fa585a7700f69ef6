"""The normal form of user, item and domain ids, shared by the dataset loader and the API.

``normalise_id`` is Unicode NFKC followed by trimming whitespace at both ends: ``"office_0579 "``,
``"ｏｆｆｉｃｅ＿０５７９"`` (fullwidth) and ``"office_0579"`` are one id. The dataset loader
applies it to every id it reads, so a bundle's ids are already in normal form and the service
(app/api/ids.py, which normalises every id a request carries) reaches each of them. It lives here,
not in app/, because the library never imports the service.

Case is kept: ids come from other systems (ASINs, account ids, tokens) where ``Ab`` and ``ab``
may be two users, and folding them would let one erasure or history reach another person.
"""

from __future__ import annotations

import unicodedata


def normalise_id(value: str) -> str:
    """``value`` in NFKC with leading and trailing whitespace removed."""
    if value.isascii():  # ASCII is its own NFKC: the common case stays cheap
        return value.strip()
    return unicodedata.normalize("NFKC", value).strip()


def is_normal_id(value: str) -> bool:
    return normalise_id(value) == value
