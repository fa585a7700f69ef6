"""The item change feed: how registered items get into a model state and stay in sync.

Every item write goes to the store first; the store's change feed (``item_changes``:
seq, item id, deleted) then tells each state what to apply. :class:`ChangeFeed`

* **replays** every stored item into a freshly built state (a load or reload),
* **publishes** a state: catches it up with writes made while it was built, then swaps
  the service's current state,
* **applies** single changes (a local write, or other replicas' changes seen by the sync
  loop or by a catch-up when a request names an unknown id),
* owns the **write lock**: the engine wants a single writer, and holding the lock makes
  "read feed position, apply, swap" atomic with respect to writes, so no registration is
  lost by a reload that runs concurrently.

Applying a change is idempotent (each item remembers the seq last applied): a change this
process made itself, or that a replay already applied, is skipped when seen again.
"""

from __future__ import annotations

import logging
import threading
from typing import Protocol

import numpy as np

from app.popularity import PopularityBook
from app.registered import ItemMeta
from app.settings import Settings
from app.state import ModelState
from app.store.base import Store, StoredItem, StoreUnavailable
from app.store_health import StoreHealth

log = logging.getLogger("micrec.service")

FEED_PAGE = 1000

Change = tuple[int, str, StoredItem | None]
"""(seq, item id, the item or None when deleted)."""


class FeedListener(Protocol):
    def item_changed(
        self, state: ModelState, domain: str, item_id: str, vector: np.ndarray | None
    ) -> None:
        """``item_id`` was registered in (``vector``) or removed from (None) ``domain``'s
        index of ``state``; called under the write lock, after the change."""

    def published(self, state: ModelState) -> None:
        """``state`` is now the current one."""


class ChangeFeed:
    def __init__(
        self, settings: Settings, store: Store, health: StoreHealth, popularity: PopularityBook
    ) -> None:
        self.settings = settings
        self.store = store
        self.health = health
        self.popularity = popularity
        self.lock = threading.RLock()
        """The write lock: held by every change to a state and by the swap."""
        self._state: ModelState | None = None
        self.listeners: list[FeedListener] = []
        """Told of every item change applied and of every published state."""

    @property
    def state(self) -> ModelState | None:
        """The published state (None until the first load succeeds)."""
        return self._state

    # --- loading ----------------------------------------------------------------------
    def replay(self, state: ModelState) -> None:
        """Apply every stored item to ``state`` and set its feed position.

        The feed position is read *before* listing, so a change made while listing is
        seen again later (sync loop or a reload's catch-up) and re-applied idempotently.
        """
        try:
            seq = self._drain(0)
            items = self.store.list_items()
        except StoreUnavailable as err:
            self.health.failed("replay registered items", err)
            return
        self.health.ok()
        with self.lock:
            for item in items:
                self.apply_upsert(state, item, seq)
            state.feed_seq = max(state.feed_seq, seq)
            state.replayed = True
        if items:
            log.info("replayed %d registered items into %s", len(items), state.model_version)

    def publish(self, new: ModelState) -> ModelState | None:
        """Catch ``new`` up with writes made during its build, then make it the current
        state; returns the state it replaced."""
        with self.lock:
            old = self._state
            if new.replayed:
                # Writes made while the new state was built are durable in the store and in
                # the feed after new.feed_seq; holding the write lock, nothing new can
                # arrive between this catch-up and the swap.
                try:
                    self._apply(new, self._read(new.feed_seq))
                except StoreUnavailable as err:
                    self.health.failed("item change feed", err)
            self._state = new
            for listener in self.listeners:
                listener.published(new)
        return old

    def _drain(self, after: int) -> int:
        """Newest change-feed seq (>= ``after``)."""
        seq = after
        while True:
            changes = self.store.item_changes(seq, FEED_PAGE)
            if not changes:
                return seq
            seq = max(seq, changes[-1].seq)
            if len(changes) < FEED_PAGE:
                return seq

    # --- following other replicas -----------------------------------------------------
    def sync_loop(self, stop: threading.Event) -> None:
        """Thread body: one :meth:`sync_once` per interval until ``stop`` is set."""
        interval = self.settings.replica_sync_interval_s or self.settings.popularity_refresh_s
        follow = self.settings.replica_sync_interval_s > 0
        while not stop.wait(interval):
            try:
                self.sync_once(follow_feed=follow)
            except Exception:  # the loop must survive anything; the next tick retries
                log.exception("replica sync failed")

    def sync_once(self, *, follow_feed: bool = True) -> None:
        """Apply other replicas' item changes and refresh popularity (one tick)."""
        state = self._state
        if state is None:
            return
        if not state.replayed:
            self.replay(state)
        elif follow_feed:
            try:
                # Store reads happen outside the write lock (a slow store must not block
                # this process's own writes for longer than needed).
                changes = self._read(state.feed_seq)
            except StoreUnavailable as err:
                self.health.failed("item change feed", err)
            else:
                self.health.ok()
                if changes:
                    with self.lock:
                        # A reload may have swapped meanwhile; the new state caught up by
                        # itself, so these changes only concern the state they were read for.
                        self._apply(state, changes)
        self.refresh_popularity(state)

    def catch_up(self) -> None:
        """Apply the item change feed now, for a request naming an id this replica does not
        know: it may have been registered on another replica moments ago, and a client that
        registers an item and then uses it must not depend on which replica answers. Only
        requests with unknown ids pay this one store read; without replica following
        (``replica_sync_interval_s`` = 0) there is nothing to catch up with."""
        if self.settings.replica_sync_interval_s > 0:
            self.sync_once()

    def refresh_popularity(self, state: ModelState, *, force: bool = False) -> None:
        self.popularity.refresh(self.store, state.domains, self.health, force=force)

    def _read(self, after: int) -> list[Change]:
        """Feed entries after ``after``, with each upserted item read from the store."""
        out: list[Change] = []
        seq = after
        while True:
            changes = self.store.item_changes(seq, FEED_PAGE)
            for ch in changes:
                out.append(
                    (ch.seq, ch.item_id, None if ch.deleted else self.store.get_item(ch.item_id))
                )
            if len(changes) < FEED_PAGE:
                return out
            seq = changes[-1].seq

    def _apply(self, state: ModelState, changes: list[Change]) -> None:
        for seq, item_id, item in changes:
            if item is None:
                self.apply_delete(state, item_id, seq)
            else:
                self.apply_upsert(state, item, seq)
            state.feed_seq = max(state.feed_seq, seq)

    # --- applying one change (the caller holds the write lock) ------------------------
    def apply_upsert(self, state: ModelState, item: StoredItem, seq: int) -> ItemMeta | None:
        """Serve ``item`` (change ``seq``) from ``state``; None when it cannot be."""
        registered = state.registered
        if registered.has_applied(item.item_id, seq):
            # This process's own write seen again in the feed, or a replayed item: applying
            # it twice would only invalidate caches for nothing.
            return registered.get(item.item_id)
        if item.domain not in state.indexes:
            log.warning(
                "registered item %r is in domain %r, which model %s does not serve; skipped",
                item.item_id,
                item.domain,
                state.model_version,
            )
            return None
        if state.is_bundle_item(item.item_id):
            log.warning("registered item %r shadows a bundle item; skipped", item.item_id)
            return None
        previous = registered.get(item.item_id)
        moved = previous is not None and previous.domain != item.domain
        if previous is not None and moved:
            state.indexes[previous.domain].remove([item.item_id])
        # add_item replaces an earlier version in one step: removing it first would let a
        # concurrent recommend fold a history in without this item (reads take no lock).
        vector = state.engine.add_item(item.item_id, item.domain, item.content)
        state.indexes[item.domain].upsert(
            [item.item_id], np.asarray(vector, dtype=np.float32).reshape(1, -1)
        )
        meta = ItemMeta.of(item)
        registered.put(meta, seq)
        for listener in self.listeners:
            if previous is not None and moved:
                listener.item_changed(state, previous.domain, item.item_id, None)
            listener.item_changed(state, item.domain, item.item_id, vector)
        return meta

    def apply_delete(self, state: ModelState, item_id: str, seq: int) -> bool:
        """Stop serving ``item_id`` from ``state``; False when it was not served."""
        if state.registered.is_newer_than(item_id, seq):
            return False
        meta = state.registered.remove(item_id, seq)
        if meta is None:
            return False
        state.indexes[meta.domain].remove([item_id])
        state.engine.remove_item(item_id)
        for listener in self.listeners:
            listener.item_changed(state, meta.domain, item_id, None)
        return True
