"""The state store contract shared by the Redis and the embedded (SQLite) implementations.

What lives here is what must survive a restart or be shared by replicas: cold-start items
registered through the API (with their encoded content, so a restart replays them without
re-encoding), user interaction histories (capped), per-domain popularity counts, the
answers of writes sent with an ``Idempotency-Key`` (app/idempotency.py; kept for a TTL),
the record of erased users (app/erasure.py) and the bundle version replicas should serve
(app/promotion.py).
Every write method returns only once the write is durable (acknowledged); a write either
happens whole or not at all.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import anyio.to_thread
import numpy as np


class StoreUnavailable(RuntimeError):
    """The backing store cannot be reached; callers answer 503 + Retry-After for writes."""


@dataclass
class StoredItem:
    """A cold-start item registered through the API.

    ``content`` maps modality ("text", "image") to the encoder output (float32 vector);
    ``version`` increases on every put (replicas use it to apply changes in order).
    """

    item_id: str
    domain: str
    title: str = ""
    categories: str = ""
    description: str = ""
    content: dict[str, np.ndarray] = field(default_factory=dict)
    created_at: float = 0.0
    updated_at: float = 0.0
    picture: bytes | None = None
    """A small WebP thumbnail of the uploaded image (app/images.py ``thumbnail``), served by
    GET /v1/items/{id}/image; None without an image. Replaced along with the item."""


@dataclass(frozen=True)
class Interaction:
    user_id: str
    item_id: str
    domain: str
    timestamp: float


@dataclass(frozen=True)
class UserRead:
    """What a recommend reads about a named user, in one go: whether they were erased, and
    their stored history (domain -> item ids, oldest first) in the domains asked for."""

    erased: bool
    history: dict[str, list[str]]


@dataclass(frozen=True)
class ItemChange:
    """One entry of the item change feed: ``deleted`` False means upsert of ``item_id``."""

    seq: int
    item_id: str
    deleted: bool


@dataclass(frozen=True)
class WantedBundle:
    """The bundle version every replica should serve (app/bundle_follow.py): a registry
    version name and when it was announced (announcing it again makes replicas that
    failed to load it try again)."""

    version: str
    announced_at: float


@dataclass(frozen=True)
class IdempotencyRecord:
    """What the store holds under an idempotency key: the fingerprint of the request that
    claimed it, the claim's random ``token`` (only its owner may complete or release it)
    and, once that request completed, its answer (``status`` 0 = still in flight)."""

    fingerprint: str
    token: str
    status: int = 0
    body: bytes = b""

    @property
    def in_flight(self) -> bool:
        return self.status == 0


# --- vector codec shared by the implementations ------------------------------------------
# Vectors are stored as raw little-endian bytes plus dtype and shape, never pickled: a
# pickle in a shared store is code execution for anyone who can write to it, and raw bytes
# round-trip bit-exactly.
_VECTOR_KINDS = "fiu"  # float, signed int, unsigned int


def pack_vector(vector: np.ndarray) -> tuple[str, tuple[int, ...], bytes]:
    """(dtype string such as ``"<f4"``, shape, raw bytes) of a numeric array."""
    arr = np.asarray(vector)
    if arr.dtype.kind not in _VECTOR_KINDS:
        raise ValueError(f"content vectors must be numeric arrays, got dtype {arr.dtype}")
    arr = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<"))
    return arr.dtype.str, tuple(int(n) for n in arr.shape), arr.tobytes()


def unpack_vector(dtype: str, shape: Sequence[int], data: bytes) -> np.ndarray:
    """Inverse of :func:`pack_vector`; returns a writable array in native byte order."""
    dt = np.dtype(dtype)
    if dt.kind not in _VECTOR_KINDS:
        raise ValueError(f"refusing to decode stored vector of dtype {dtype!r}")
    arr = np.frombuffer(data, dtype=dt).reshape(tuple(shape))
    return arr.astype(dt.newbyteorder("="), copy=True)


class Store(ABC):
    @abstractmethod
    def ping(self) -> bool:
        """True when the store answers."""

    # --- cold-start items -------------------------------------------------------------
    @abstractmethod
    def put_item(self, item: StoredItem) -> int:
        """Insert or replace; returns the change-feed sequence number of this write."""

    @abstractmethod
    def get_item(self, item_id: str) -> StoredItem | None: ...

    @abstractmethod
    def delete_item(self, item_id: str) -> int | None:
        """Delete; returns the change sequence number, or None when the item did not exist."""

    @abstractmethod
    def list_items(self) -> list[StoredItem]:
        """Every registered item (start-up replay)."""

    @abstractmethod
    def item_changes(self, after_seq: int, limit: int = 1000) -> list[ItemChange]:
        """Item changes with seq > after_seq in order (how replicas follow each other)."""

    # --- interactions -----------------------------------------------------------------
    @abstractmethod
    def add_interactions(
        self, rows: Sequence[Interaction], history_cap: int
    ) -> dict[tuple[str, str], int]:
        """Append rows atomically to user histories (keeping the newest ``history_cap`` per
        user and domain) and count each (user, item) pair not seen before once in the
        item's popularity (re-posted rows cannot inflate it). Returns the popularity
        increments made: (domain, item id) -> new users."""

    @abstractmethod
    def get_history(self, user_id: str) -> dict[str, list[str]]:
        """domain -> item ids, oldest first (capped)."""

    def read_user(self, user_id: str, domains: Sequence[str]) -> UserRead:
        """Erasure flag + stored history in ``domains`` (what a recommend needs). This
        default asks twice; a store that can answers in one round trip."""
        erased = self.is_erased(user_id)
        history = self.get_history(user_id)
        return UserRead(erased, {d: history[d] for d in domains if d in history})

    async def read_user_async(self, user_id: str, domains: Sequence[str]) -> UserRead:
        """:meth:`read_user` for the event loop. This default runs it on a worker thread
        (a blocking store must not stall the loop); the Redis store reads on the loop."""
        return await anyio.to_thread.run_sync(self.read_user, user_id, domains)

    @abstractmethod
    def popularity(self, domain: str) -> dict[str, int]:
        """item id -> number of interactions posted through the API in ``domain``."""

    # --- export (app/export.py): streamed reads of everything stored ------------------
    @abstractmethod
    def iter_interactions(self, batch: int = 1000) -> Iterator[Interaction]:
        """Every stored interaction (the capped histories), read ``batch`` rows per store
        round trip so an export never holds the whole table. Order: per (user, domain)
        oldest first; no other order is promised. Rows written while iterating may or may
        not be seen."""

    @abstractmethod
    def iter_items(self, batch: int = 500) -> Iterator[StoredItem]:
        """Every registered item, ``batch`` per round trip (like :meth:`list_items`)."""

    @abstractmethod
    def interaction_count(self) -> int:
        """Interactions ever appended (monotonic: trimming and erasure do not lower it);
        ``micrec trainer`` retrains after a configured number of new ones."""

    # --- user erasure (app/erasure.py) ------------------------------------------------
    @abstractmethod
    def erase_user(self, user_id: str, erased_at: float) -> dict[tuple[str, str], int]:
        """Atomically delete the user's stored history, take the user out of every
        popularity count they added to, and record the erasure (``erased_at``, seconds
        since the epoch; a later erasure of the same user replaces the time). Idempotent;
        an unknown user is recorded too. Returns the popularity decrements made:
        (domain, item id) -> users removed (>= 1)."""

    @abstractmethod
    def is_erased(self, user_id: str) -> bool:
        """True when the user was erased: the service must not use the bundle's
        (training) history of this user any more."""

    @abstractmethod
    def erased_users(self) -> dict[str, float]:
        """Every erased user id -> time of its latest erasure. For exports and retraining:
        they must leave out these users' bundle (training) interactions and any stored
        interaction up to that time, so an erased user is not learned again."""

    # --- bundle version (app/promotion.py, app/bundle_follow.py) ---------------------
    @abstractmethod
    def set_bundle_version(self, version: str, announced_at: float) -> None:
        """Announce the registry version every replica should serve (replaces the last
        announcement)."""

    @abstractmethod
    def get_bundle_version(self) -> WantedBundle | None:
        """The last announcement; None when no version was ever announced."""

    # --- idempotency keys -------------------------------------------------------------
    @abstractmethod
    def claim_idempotency_key(
        self, key: str, claim: IdempotencyRecord, ttl_s: float
    ) -> IdempotencyRecord | None:
        """Store ``claim`` (in flight) under ``key`` for ``ttl_s`` seconds unless an
        unexpired record is there. None = claimed; else the record found. Atomic: of two
        concurrent claims of one key exactly one gets None."""

    @abstractmethod
    def complete_idempotency_key(
        self, key: str, claim: IdempotencyRecord, answer: IdempotencyRecord, ttl_s: float
    ) -> bool:
        """Replace our ``claim`` with ``answer``, kept ``ttl_s`` seconds. False (nothing
        written) when another claim holds the key (ours expired and was taken)."""

    @abstractmethod
    def release_idempotency_key(self, key: str, claim: IdempotencyRecord) -> None:
        """Delete the key if ``claim`` still holds it (the request ended without an effect,
        so a retry must run again)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
