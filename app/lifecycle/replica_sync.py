"""What a replica re-reads from the store to stay in step with the others: their item
writes (the change feed, app/lifecycle/feed.py) and popularity counts (app/lifecycle/popularity.py).

Workers and replicas share state only through the store. The sync loop (thread
``micrec-sync``) does one :meth:`ReplicaSync.once` every ``replica_sync_interval_s`` (or
``popularity_refresh_s`` when only popularity is refreshed); a request naming an id this
replica does not know calls :meth:`ReplicaSync.catch_up` first.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from app.lifecycle.feed import ChangeFeed
from app.lifecycle.popularity import PopularityBook
from app.lifecycle.served import ServedModel
from app.lifecycle.state import ModelState
from app.runtime.store_health import StoreHealth
from app.settings import Settings
from app.store.base import Store

log = logging.getLogger("micrec.service")


class ReplicaSync:
    def __init__(
        self,
        settings: Settings,
        served: ServedModel,
        feed: ChangeFeed,
        popularity: PopularityBook,
        store: Store,
        health: StoreHealth,
    ) -> None:
        self.settings = settings
        self.served = served
        self.feed = feed
        self.popularity = popularity
        self.store = store
        self.health = health

    @property
    def needed(self) -> bool:
        """Whether the settings ask for the sync loop at all."""
        return self.settings.replica_sync_interval_s > 0 or self.settings.popularity_refresh_s > 0

    def loop(self, stop: threading.Event, also: Callable[[], object] | None = None) -> None:
        """Thread body: one :meth:`once` (then ``also()``, which must not raise) per
        interval until ``stop`` is set."""
        interval = self.settings.replica_sync_interval_s or self.settings.popularity_refresh_s
        follow = self.settings.replica_sync_interval_s > 0
        while not stop.wait(interval):
            try:
                self.once(follow_feed=follow)
            except Exception:  # the loop must survive anything; the next tick retries
                log.exception("replica sync failed")
            if also is not None:
                also()

    def once(self, *, follow_feed: bool = True) -> None:
        """Apply other replicas' item changes and refresh popularity (one tick). A state
        whose replay failed is replayed even when the feed is not followed."""
        state = self.served.state
        if state is None:
            return
        if follow_feed or not state.replayed:
            self.feed.follow(state)
        canary = self.served.canary
        if canary is not None and (follow_feed or not canary.state.replayed):
            self.feed.follow(canary.state)  # the candidate serves registered items too
        self.refresh_popularity(state)

    def catch_up(self) -> None:
        """Apply the item change feed now, for a request naming an id this replica does not
        know: it may have been registered on another replica moments ago, and a client that
        registers an item and then uses it must not depend on which replica answers. Only
        requests with unknown ids pay this one store read; without replica following
        (``replica_sync_interval_s`` = 0) there is nothing to catch up with."""
        if self.settings.replica_sync_interval_s > 0:
            self.once()

    def refresh_popularity(self, state: ModelState, *, force: bool = False) -> None:
        """The store's popularity counts for ``state``'s domains (every
        ``popularity_refresh_s`` at most, unless ``force``: a new state)."""
        self.popularity.refresh(self.store, state.domains, self.health, force=force)
