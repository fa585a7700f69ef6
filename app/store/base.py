"""The state store contract shared by the Redis and the embedded (SQLite) implementations.

What lives here is what must survive a restart or be shared by replicas: cold-start items
registered through the API (with their encoded content, so a restart replays them without
re-encoding), user interaction histories (capped), per-domain popularity counts, the
answers of writes sent with an ``Idempotency-Key`` (app/runtime/idempotency.py; kept for a TTL),
the record of erased users (app/users/erasure.py) and the bundle version replicas should serve
(app/lifecycle/promotion.py).
Every write method returns only once the write is durable (acknowledged); a write either
happens whole or not at all.

Erased data leaves the store's files too, not only its live data: the erasure record holds
a pseudonym of the id (:func:`erasure_key`), never the id; the user's idempotency records
go with their history; and :meth:`Store.purge_erased` rewrites what still holds deleted
bytes (SQLite: the write-ahead log; Redis: the append-only file), within the bound
docs/service.md ("User erasure") states.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import anyio.to_thread
import numpy as np

from app.store.online import HourCounts, OnlineCounts, RecommendationRecord, StoredRecommendation


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
    """A small WebP thumbnail of the uploaded image (app/catalogue/images.py ``thumbnail``), served by
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
    """The bundle version every replica should serve (app/lifecycle/bundle_follow.py): a registry
    version name and when it was announced (announcing it again makes replicas that
    failed to load it try again)."""

    version: str
    announced_at: float


@dataclass(frozen=True)
class Canary:
    """A canary announced to every replica (app/lifecycle/canary.py): registry ``version``
    served to the ``share`` of users whose hash with ``salt`` falls under it, since
    ``started_at``; ``decided`` ("promote" or "rollback") once one process claimed the
    decision (:meth:`Store.decide_canary`)."""

    version: str
    share: float
    salt: str
    started_at: float
    decided: str | None = None


@dataclass(frozen=True)
class IdempotencyRecord:
    """What the store holds under an idempotency key: the fingerprint of the request that
    claimed it, the claim's random ``token`` (only its owner may complete or release it)
    and, once that request completed, its answer (``status`` 0 = still in flight)."""

    fingerprint: str
    token: str
    status: int = 0
    body: bytes = b""
    users: tuple[str, ...] = field(default=(), compare=False)
    """The user ids the request names (its record goes when one of them is erased); not
    part of the stored value, so a record read back has none."""

    @property
    def in_flight(self) -> bool:
        return self.status == 0


def erasure_key(user_id: str) -> str:
    """The pseudonym an erasure is recorded under: a sha256 of the id. The record must let
    the service recognise the id again (to keep its bundle history retired and exports
    from learning it again), not hold it, so an erased id is left nowhere in the store.
    Not a secret: whoever knows an id can test whether it was erased."""
    return hashlib.sha256(b"micrec erased user\x00" + user_id.encode()).hexdigest()


class ErasureRecords:
    """The erased users (:meth:`Store.erased_users`): looked up by user id, which is hashed
    to its record's pseudonym (:func:`erasure_key`); the records cannot be listed back as
    ids."""

    def __init__(self, by_key: Mapping[str, float]) -> None:
        self._by_key = dict(by_key)

    @classmethod
    def of_ids(cls, erased: Mapping[str, float]) -> ErasureRecords:
        """From user id -> time (records written before pseudonyms, test doubles)."""
        return cls({erasure_key(u): t for u, t in erased.items()})

    def get(self, user_id: str) -> float | None:
        """Time of the user's latest erasure, None when never erased."""
        return self._by_key.get(erasure_key(user_id))

    def __contains__(self, user_id: object) -> bool:
        return isinstance(user_id, str) and erasure_key(user_id) in self._by_key

    def __len__(self) -> int:
        return len(self._by_key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ErasureRecords) and self._by_key == other._by_key

    __hash__ = None  # type: ignore[assignment]  # mutable-looking value: not hashable

    def __repr__(self) -> str:
        return f"ErasureRecords({len(self)} users)"


PurgeState = Literal["idle", "done", "started", "waiting"]
"""What :meth:`Store.purge_erased` did: nothing was due / the files hold no erased data
any more / a rewrite that will leave it out was started / due, but not now (too soon after
the last rewrite, or one is running): a later call does it."""


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
        self,
        rows: Sequence[Interaction],
        history_cap: int,
        *,
        source: str = "",
        source_cap: int = 0,
    ) -> dict[tuple[str, str], int]:
        """Append rows atomically to user histories (keeping the newest ``history_cap`` per
        user and domain) and count each (user, item) pair not seen before once in the
        item's popularity (re-posted rows cannot inflate it). ``source`` names who posted
        the rows (a pseudonym of the API key); with ``source_cap`` > 0 one source counts at
        most that many users per item (pairs beyond it are stored in the history but not
        counted, so a key posting made-up users cannot make an item popular; erasing a
        counted user frees a place). Returns the popularity increments made: (domain,
        item id) -> new users."""

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

    # --- export (app/learning/export.py): streamed reads of everything stored ------------------
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

    # --- user erasure (app/users/erasure.py) ------------------------------------------------
    @abstractmethod
    def erase_user(self, user_id: str, erased_at: float) -> dict[tuple[str, str], int]:
        """Atomically delete the user's stored history, the records of the recommendations
        served to them (with their feedback), the idempotency records of requests that
        named the user, take the user out of every popularity count they
        added to, and record the erasure under :func:`erasure_key` (``erased_at``, seconds
        since the epoch; a later erasure of the same user replaces the time). Idempotent;
        an unknown user is recorded too. Returns the popularity decrements made:
        (domain, item id) -> users removed (>= 1). The deleted bytes may stay in the
        store's files until :meth:`purge_erased`."""

    @abstractmethod
    def is_erased(self, user_id: str) -> bool:
        """True when the user was erased: the service must not use the bundle's
        (training) history of this user any more."""

    @abstractmethod
    def erased_users(self) -> ErasureRecords:
        """Every erasure (user id -> time of its latest erasure, looked up by id). For
        exports and retraining: they must leave out these users' bundle (training)
        interactions and any stored interaction up to that time, so an erased user is not
        learned again."""

    def purge_erased(self, min_interval_s: float = 0.0) -> PurgeState:
        """Rewrite what still holds the bytes of data erased since the last purge (write-
        ahead log, append-only file), or start doing so; ``min_interval_s`` spaces out
        expensive rewrites (Redis). Cheap when nothing is due; call it after an erasure
        and now and then (a "waiting" purge is done by a later call). This default is
        for stores without such files."""
        return "idle"

    # --- bundle version (app/lifecycle/promotion.py, app/lifecycle/bundle_follow.py) ---------------------
    @abstractmethod
    def set_bundle_version(self, version: str, announced_at: float) -> None:
        """Announce the registry version every replica should serve (replaces the last
        announcement)."""

    @abstractmethod
    def get_bundle_version(self) -> WantedBundle | None:
        """The last announcement; None when no version was ever announced."""

    # --- canary (app/lifecycle/canary.py) -----------------------------------------------
    @abstractmethod
    def set_canary(self, canary: Canary | None) -> None:
        """Announce ``canary`` to every replica (None: no canary), replacing the last one."""

    @abstractmethod
    def get_canary(self) -> Canary | None:
        """The canary announced now, if any."""

    @abstractmethod
    def decide_canary(self, salt: str, outcome: str) -> bool:
        """Record ``outcome`` on the canary with ``salt`` if it is still undecided. Atomic:
        of several replicas deciding at once exactly one gets True (it then acts)."""

    # --- idempotency keys -------------------------------------------------------------
    @abstractmethod
    def claim_idempotency_key(
        self, key: str, claim: IdempotencyRecord, ttl_s: float
    ) -> IdempotencyRecord | None:
        """Store ``claim`` (in flight) under ``key`` for ``ttl_s`` seconds unless an
        unexpired record is there. None = claimed; else the record found. Atomic: of two
        concurrent claims of one key exactly one gets None. The record is filed under each
        of ``claim.users``, so erasing one of them deletes it (:meth:`erase_user`)."""

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

    # --- served recommendations and feedback (app/feedback/, app/store/online.py) ---------
    @abstractmethod
    def put_recommendations(
        self, records: Sequence[RecommendationRecord], ttl_s: float, max_records: int
    ) -> int:
        """Keep ``records`` for ``ttl_s`` seconds, at most ``max_records`` in all (the
        oldest go first), and count them in the online counters (recommendations, items
        shown, catalogue size). A record of a user erased at or after its time is not
        kept (it was queued before the erasure). Returns how many were kept."""

    @abstractmethod
    def get_recommendation(self, recommendation_id: str) -> StoredRecommendation | None:
        """The record and its feedback; None when unknown, expired or pruned."""

    @abstractmethod
    def add_feedback(
        self,
        recommendation_id: str,
        events: Sequence[tuple[str, str]],
        positive: Collection[str],
    ) -> list[int] | None:
        """Apply (item id, event type) ``events`` to the recommendation's feedback and the
        online counters in one atomic step (``app.store.online.apply_feedback``: every
        item must be in the record). Returns the indexes of the events that were new
        (the others had been seen: a retry), or None when the record is gone."""

    @abstractmethod
    def online_versions(self) -> list[tuple[str, str]]:
        """Every (version, domain) that has online counters, sorted."""

    @abstractmethod
    def online_counts(self, version: str, domain: str) -> OnlineCounts:
        """The online counters of (version, domain) (zeros when none)."""

    @abstractmethod
    def online_hourly(self, version: str, domain: str, since: float) -> list[HourCounts]:
        """The counters per hour of the recommendations served since ``since``, by hour
        (hours without any left out; kept ``app.store.online.HOURS_KEPT``)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
