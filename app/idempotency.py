"""Safe retries of writes: what a client sees when it cannot know whether a write happened.

* A store that times out may still have applied the write: the 503 says the outcome is
  unknown and how to check, instead of "not saved".
* Registering an item is idempotent by content: re-posting the same id with the same
  fields and the same encoded content (a retry after a lost answer) answers 200 with the
  stored item instead of 409; different content is still a conflict.
* Interactions: popularity counts a (user, item) pair once (the stores keep the pairs),
  so a re-posted batch cannot inflate it.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from app.store.base import StoredItem

CONTENT_ATOL = 1e-5
"""Encoders are deterministic on one machine; this absorbs float rounding across threads."""


def outcome_unknown(operation: str, check: str = "") -> str:
    """The 503 message of a write the store did not confirm."""
    how = f"{check} shows whether it was; " if check else ""
    return (
        f"state store unavailable or timed out: the {operation} write was not confirmed, so "
        f"its outcome is unknown (it may or may not have been saved). {how}retrying the "
        "same request is safe"
    )


def not_saved(operation: str) -> str:
    """The 503 message when the store failed before anything was written."""
    return f"state store unavailable; {operation} not saved, retry later"


def same_item(
    stored: StoredItem,
    *,
    domain: str,
    fields: Mapping[str, str],
    content: Mapping[str, np.ndarray],
) -> bool:
    """True when a registration of ``stored.item_id`` would store exactly ``stored``."""
    if stored.domain != domain or any(getattr(stored, k) != v for k, v in fields.items()):
        return False
    if set(stored.content) != set(content):
        return False
    return all(
        np.shape(stored.content[m]) == np.shape(content[m])
        and np.allclose(stored.content[m], content[m], atol=CONTENT_ATOL)
        for m in content
    )
