"""Recording what was served: every recommend answer gets a ``recommendation_id`` and its
list is written to the store, off the request path.

The request only draws the id (128 random bits: unguessable, so nobody can post feedback
on another's list) and appends the record to a bounded in-memory queue; a background
thread (``micrec-record``) writes what is waiting every ``record_flush_s`` in one store
call (``Store.put_recommendations``). When the queue is full, or the store is down at the
flush, records are dropped and counted (``micrec_recommendation_records_dropped_total``)
rather than slow or fail the recommend: the answer still carries its id, and feedback on
it gets 404 like an expired one. A record waits at most ``record_flush_s`` (plus one
store write) before feedback on it is accepted; the stop of the service writes what is
left. Bounded in the store by ``recommendation_ttl_s`` and ``recommendation_max_records``.

What a record holds (app/store/online.py): the id, the user id or the client's anonymous
``session_id`` (or neither), domain, items with rank and source, the model version and
the time. The user's erasure deletes their records (``Store.erase_user``).
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections import deque

from app.api.schemas import RecommendedItem, RecommendResponse
from app.runtime.store_health import StoreHealth
from app.runtime.telemetry import Metrics
from app.settings import Settings
from app.store.base import Store, StoreUnavailable
from app.store.online import RecommendationRecord

log = logging.getLogger("micrec.service")

_Queued = tuple[str, str | None, str | None, str, str, float, list[RecommendedItem], int]
"""A record as the request leaves it: id, user, session, domain, version, time, items,
catalogue size."""

FLUSH_BATCH = 5000
"""Most records one store write takes (a full queue is written in several)."""


def new_recommendation_id() -> str:
    """32 hex digits from the OS's random source."""
    return secrets.token_hex(16)


class RecommendationRecorder:
    """Ids for answers and the queue of their records (module docstring)."""

    def __init__(
        self, settings: Settings, store: Store, metrics: Metrics, health: StoreHealth
    ) -> None:
        self.enabled = settings.record_recommendations
        self.settings = settings
        self.store = store
        self.metrics = metrics
        self.health = health
        self._queue: deque[_Queued] = deque()
        self._max = settings.record_queue
        self._flush_lock = threading.Lock()
        self._dropped_full = metrics.records_dropped.labels("queue_full")

    def record(
        self,
        answer: RecommendResponse,
        *,
        user_id: str | None,
        session_id: str | None,
        catalogue_size: int,
    ) -> None:
        """Give ``answer`` its id and queue its record (nothing when recording is off)."""
        if not self.enabled:
            return
        rec_id = new_recommendation_id()
        answer.recommendation_id = rec_id
        # len() of a deque and append are atomic: the bound may be passed by a few
        # records when threads race, never by more than the threads appending.
        if len(self._queue) >= self._max:
            self._dropped_full.inc()
            return
        # The record is built by the recording thread: the request only appends a tuple
        # (the answer's items are not changed after it is answered).
        self._queue.append(
            (
                rec_id,
                user_id,
                None if user_id is not None else session_id,
                answer.domain,
                answer.model_version,
                time.time(),
                answer.items,
                catalogue_size,
            )
        )

    @property
    def waiting(self) -> int:
        return len(self._queue)

    def flush(self) -> int:
        """Write every record waiting now; returns how many the store kept."""
        kept = 0
        with self._flush_lock:
            while self._queue:
                batch: list[RecommendationRecord] = []
                while self._queue and len(batch) < FLUSH_BATCH:
                    rec_id, user, session, domain, version, at, items, size = self._queue.popleft()
                    served = tuple((it.item_id, it.source) for it in items)
                    batch.append(
                        RecommendationRecord(
                            rec_id, user, session, domain, version, at, served, size
                        )
                    )
                kept += self._write(batch)
        return kept

    def _write(self, batch: list[RecommendationRecord]) -> int:
        s = self.settings
        try:
            kept = self.store.put_recommendations(
                batch, s.recommendation_ttl_s, s.recommendation_max_records
            )
        except StoreUnavailable as err:
            self.health.failed("record recommendations", err)
            self.metrics.records_dropped.labels("store").inc(len(batch))
            return 0
        except Exception:  # a bug must not end the thread; the batch is lost and counted
            log.exception("writing recommendation records failed")
            self.metrics.records_dropped.labels("store").inc(len(batch))
            return 0
        if kept < len(batch):
            self.metrics.records_dropped.labels("erased").inc(len(batch) - kept)
        counts: dict[tuple[str, str], int] = {}
        for r in batch:
            counts[(r.version, r.domain)] = counts.get((r.version, r.domain), 0) + 1
        for (version, domain), n in counts.items():
            self.metrics.records.labels(version, domain).inc(n)
        return kept

    def loop(self, stop: threading.Event) -> None:
        """Flush every ``record_flush_s`` until ``stop``, then once more."""
        while not stop.wait(self.settings.record_flush_s):
            self.flush()
        self.flush()
