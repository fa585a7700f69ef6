"""Safe retries of writes: what a client sees when it cannot know whether a write happened.

* A store that times out may still have applied the write: the 503 says the outcome is
  unknown and how to check, instead of "not saved" (app/runtime/store_health.py).
* Registering an item is idempotent by content: re-posting the same id with the same
  fields and the same encoded content (a retry after a lost answer) answers 200 with the
  stored item instead of 409; different content is still a conflict.
* Interactions: popularity counts a (user, item) pair once (the stores keep the pairs),
  so a re-posted batch cannot inflate it.
* ``Idempotency-Key`` (IETF httpapi draft, as Stripe uses it) on POST /v1/items,
  /v1/interactions and /v1/feedback: :class:`IdempotencyGuard`. The first request with a key claims it in
  the store and runs; its answer (status + body) is kept ``idempotency_ttl_s``. A retry
  with the same key and the same request (fingerprint = sha256 of method, path and raw
  body) gets that answer again without running (``Idempotent-Replayed: true``); the same
  key with another request is a 422; while the first is still running, a 409. Keys are
  per API key, so one client can neither read nor block another's answers. A request
  that fails (4xx, 503, a bug) releases its key: nothing was applied, a retry runs again.
  A record is filed under the users its request names (``users``): erasing one of them
  deletes it (app/users/erasure.py), so a retry of that request after the erasure runs again.

  Limit: the answer is written after the effect, not in the same transaction. If the
  store fails between the two, or on the write itself (a 503 "outcome unknown"), a retry
  can apply the effect again, as without a key.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel

from app.api.errors import Conflict, InvalidInput
from app.api.ids import key_source
from app.runtime.store_health import StoreHealth
from app.store.base import IdempotencyRecord, Store, StoredItem, StoreUnavailable

log = logging.getLogger("micrec.service")

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
MAX_KEY_CHARS = 255
IN_FLIGHT_LEASE_S = 120.0
"""How long a claim holds its key without an answer: far longer than a write runs, so a
concurrent retry is refused (409) instead of running twice; short enough that a key
whose worker died mid-request frees itself soon."""

CONTENT_ATOL = 1e-5
"""Encoders are deterministic on one machine; this absorbs float rounding across threads."""


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


@dataclass(frozen=True)
class KeyedRequest:
    """A write sent with an ``Idempotency-Key``: its store key and its fingerprint."""

    key: str
    fingerprint: str

    @classmethod
    def of(
        cls, key: str, *, method: str, path: str, body: bytes, api_key: str | None
    ) -> KeyedRequest:
        """422 unless ``key`` is 1-255 printable ASCII characters (0x20-0x7E)."""
        if not 1 <= len(key) <= MAX_KEY_CHARS or not all(" " <= c <= "~" for c in key):
            raise InvalidInput(
                f"{HEADER} must be 1 to {MAX_KEY_CHARS} printable ASCII characters (0x20-0x7E)"
            )
        # Scoped per API key (hashed: the store never holds a key in clear), and the
        # client's key hashed too: clients often put ids in it (a user's), which would
        # otherwise stay in the store after that user's erasure.
        scope = key_source(api_key)
        digest = hashlib.sha256(f"{method.upper()} {path}\n".encode())
        digest.update(body)
        named = hashlib.sha256(key.encode()).hexdigest()[:32]
        return cls(key=f"{scope}:{named}", fingerprint=digest.hexdigest())


@dataclass(frozen=True)
class Answer:
    """What a keyed write answers: status, JSON body, and whether it is a replay."""

    status: int
    body: bytes
    replayed: bool


class IdempotencyGuard:
    """Runs a write at most once per key (see the module docstring)."""

    def __init__(
        self, store: Store, health: StoreHealth, ttl_s: float, lease_s: float = IN_FLIGHT_LEASE_S
    ) -> None:
        self.store = store
        self.health = health
        self.ttl_s = ttl_s
        self.lease_s = min(lease_s, ttl_s)

    def run(
        self,
        request: KeyedRequest,
        write: Callable[[], tuple[int, BaseModel]],
        users: Iterable[str] = (),
    ) -> Answer:
        """``write()`` -> (status, answer model), run only if this request claims the key;
        otherwise the stored answer, a 409 (in flight) or a 422 (other request). ``users``:
        the user ids the request names; erasing one of them deletes the record."""
        named = tuple(sorted(set(users)))
        claim = IdempotencyRecord(request.fingerprint, secrets.token_hex(16), users=named)
        try:
            found = self.store.claim_idempotency_key(request.key, claim, self.lease_s)
        except StoreUnavailable as err:
            raise self.health.unavailable("idempotency", err, attempted=False) from None
        self.health.ok()
        if found is not None:
            return self._replay(found, request)
        try:
            status, model = write()
        except BaseException:
            self._release(request.key, claim)
            raise
        answer = IdempotencyRecord(
            claim.fingerprint, claim.token, status, model.model_dump_json().encode(), named
        )
        try:
            if not self.store.complete_idempotency_key(request.key, claim, answer, self.ttl_s):
                log.warning("idempotency key claim expired before its answer was stored")
        except StoreUnavailable as err:
            # The write happened: answer it; only a retry loses the replay (module docstring).
            self.health.failed("idempotency", err)
        return Answer(status, answer.body, replayed=False)

    @staticmethod
    def _replay(found: IdempotencyRecord, request: KeyedRequest) -> Answer:
        if found.fingerprint != request.fingerprint:
            raise InvalidInput(
                f"this {HEADER} was already used for another request (different method, path "
                "or body); send a new key for a new request"
            )
        if found.in_flight:
            raise Conflict(
                f"a request with this {HEADER} is still being processed; retry once it has "
                "answered",
                headers={"Retry-After": "1"},
            )
        return Answer(found.status, found.body, replayed=True)

    def _release(self, key: str, claim: IdempotencyRecord) -> None:
        try:
            self.store.release_idempotency_key(key, claim)
        except StoreUnavailable as err:  # the claim then frees itself after the lease
            self.health.failed("idempotency", err)
