"""Which version serves a request while a canary runs (app/lifecycle/canary.py): a stable
hash of (user id or session id, the canary's salt) against its share."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from app.lifecycle.state import ModelState


def canary_bucket(key: str, salt: str) -> float:
    """A user's stable position in [0, 1) for one canary: sha256 of (salt, key)."""
    digest = hashlib.sha256(f"{salt}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@dataclass(frozen=True)
class CanaryRoute:
    """What a request needs to choose its version: the candidate's loaded state and who
    gets it (read without a lock: replaced whole)."""

    state: ModelState
    version: str
    share: float
    salt: str

    def takes(self, key: str | None) -> bool:
        return key is not None and canary_bucket(key, self.salt) < self.share
