"""User erasure: ``DELETE /v1/users/{user_id}`` (no HTTP here; app/routers/users.py calls
this through ``ErasureDep``, app/deps.py).

Erasing a user is one atomic store write (``Store.erase_user``): the stored history goes,
the user leaves every popularity count they added to, and the erasure is recorded (user
id + time). The record is what retires the user's *bundle* (training) history too: the
bundle is read-only and shared by every replica, so instead of changing it, every
named-user recommend asks the store whether the user was erased, in the same request that
reads the stored history (``app.answering.collect_history``). That is the simplest correct
choice: a replica honours an erasure made on any other from its very next read, and after
a restart, with no feed position, cache or message to keep in step (the change feed is
for items, and a pushed message would leave a window until it arrives). The cost is one
small store read per named-user recommend. Exports and retraining read
``Store.erased_users()`` to leave the user out.

Interactions posted for the user after the erasure are new data: they are stored and used
like any other; the bundle history stays retired.
"""

from __future__ import annotations

import time

from app.parts import Resource
from app.store.base import StoreUnavailable


class UserErasure(Resource):
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
