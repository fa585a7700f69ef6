"""User erasure: ``DELETE /v1/users/{user_id}`` (no HTTP here; app/http/routers/users.py calls
this through ``ErasureDep``, app/http/deps.py).

Erasing a user is one atomic store write (``Store.erase_user``): the stored history goes,
the user leaves every popularity count they added to, and the erasure is recorded (user
id + time). The record is what retires the user's *bundle* (training) history too: the
bundle is read-only and shared by every replica, so instead of changing it, every
named-user recommend asks the store whether the user was erased, in the same request that
reads the stored history (``app.serving.answering.collect_history``). That is the simplest correct
choice: a replica honours an erasure made on any other from its very next read, and after
a restart, with no feed position, cache or message to keep in step (the change feed is
for items, and a pushed message would leave a window until it arrives). The cost is one
small store read per named-user recommend. Exports and retraining read
``Store.erased_users()`` to leave the user out.

Interactions posted for the user after the erasure are new data: they are stored and used
like any other; the bundle history stays retired.

Copies: the same write drops the idempotency records of requests that named the user, and
records the erasure under a pseudonym of the id (``app.store.base.erasure_key``), so the
live data holds the id nowhere. The store's files still hold the deleted bytes until they
are rewritten: right after the erasure ``Store.purge_erased`` does it (SQLite: WAL
checkpoint + truncate, at once) or starts it (Redis: an AOF rewrite, at most once per
``erasure_purge_interval_s``); a purge that must wait is done by the sync thread's next
tick (:meth:`UserErasure.purge`). docs/service.md ("User erasure") states the bound.
"""

from __future__ import annotations

import logging
import threading
import time

from app.lifecycle.parts import Parts, Resource
from app.store.base import PurgeState, StoreUnavailable

log = logging.getLogger("micrec.service")

PURGE_CHECK_S = 1.0
"""How often the sync thread asks the store whether a purge is due (a Redis GET)."""


class UserErasure(Resource):
    def __init__(self, parts: Parts) -> None:
        super().__init__(parts)
        self._purge_lock = threading.Lock()
        self._last_check = 0.0

    def erase(self, user_id: str) -> None:
        """Erase ``user_id`` (idempotent; unknown users too, so the answer reveals nothing)."""
        with self.popularity.local_write() as book:
            try:
                decrements = self.store.erase_user(user_id, time.time())
            except StoreUnavailable as err:
                raise self.health.unavailable("user erasure", err) from None
            book.add({pair: -n for pair, n in decrements.items()})
        self.erased.add(user_id)
        self.health.ok()
        self.purge(force=True)

    def purge(self, *, force: bool = False) -> PurgeState | None:
        """Purge the store's files of erased data when due (module docstring); at most
        every ``PURGE_CHECK_S`` unless ``force``. Never raises: the erasure itself is
        committed, and a purge that fails is retried by the next call."""
        now = time.monotonic()
        if not force and now - self._last_check < PURGE_CHECK_S:
            return None
        if not self._purge_lock.acquire(blocking=force):
            return None  # another thread is purging
        try:
            self._last_check = now
            return self.store.purge_erased(self.settings.erasure_purge_interval_s)
        except StoreUnavailable as err:
            self.health.failed("erasure purge", err)
        except Exception:  # a purge must never fail the erasure or kill the sync thread
            log.exception("purging erased data from the store's files failed")
        finally:
            self._purge_lock.release()
        return None
