"""The item change feed: how registered items get into a model state and stay in sync.

Every item write goes to the store first; the store's change feed (``item_changes``:
seq, item id, deleted) then tells each state what to apply. :class:`ChangeFeed`

* **replays** every stored item into a freshly built state (a load or reload),
* **publishes** a state: catches it up with writes made while it was built, then swaps
  it in as the served one (app/lifecycle/served.py), under the write lock, so no registration is
  lost by a reload that runs concurrently,
* **follows** the feed: applies the changes after a state's position (other replicas'
  writes; app/lifecycle/replica_sync.py calls this on a timer and for unknown ids),
* **applies** single changes (a local write, or a followed one) under the write lock.

Applying a change is idempotent (each item remembers the seq last applied): a change this
process made itself, or that a replay already applied, is skipped when seen again.
"""

from __future__ import annotations

import contextlib
import logging

import numpy as np

from app.lifecycle.registered import ItemMeta
from app.lifecycle.served import ServedModel
from app.lifecycle.state import ModelState
from app.runtime.store_health import StoreHealth
from app.store.base import Store, StoredItem, StoreUnavailable

log = logging.getLogger("micrec.service")

FEED_PAGE = 1000

Change = tuple[int, str, StoredItem | None]
"""(seq, item id, the item or None when deleted)."""


class ChangeFeed:
    def __init__(self, served: ServedModel, store: Store, health: StoreHealth) -> None:
        self.served = served
        self.store = store
        self.health = health

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
        with self.served.lock, contextlib.ExitStack() as batched:
            for index in state.indexes.values():
                # An index that writes to a remote engine (the Milvus one) sends the
                # replayed items together at the end instead of one call per item.
                deferred = getattr(index, "deferred", None)
                if deferred is not None:
                    batched.enter_context(deferred())
            for item in items:
                self.apply_upsert(state, item, seq)
            state.feed_seq = max(state.feed_seq, seq)
            state.replayed = True
        if items:
            log.info("replayed %d registered items into %s", len(items), state.model_version)

    def publish(self, new: ModelState) -> ModelState | None:
        """Catch ``new`` up with writes made during its build, then make it the current
        state; returns the state it replaced."""
        with self.served.lock:
            if new.replayed:
                # Writes made while the new state was built are durable in the store and in
                # the feed after new.feed_seq; holding the write lock, nothing new can
                # arrive between this catch-up and the swap.
                try:
                    self._apply(new, self._read(new.feed_seq))
                except StoreUnavailable as err:
                    self.health.failed("item change feed", err)
            return self.served.swap(new)

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
    def follow(self, state: ModelState) -> None:
        """Apply the changes after ``state``'s feed position (other replicas' writes); a
        state whose replay failed (store down at load) is replayed instead."""
        if not state.replayed:
            self.replay(state)
            return
        try:
            # Store reads happen outside the write lock (a slow store must not block
            # this process's own writes for longer than needed).
            changes = self._read(state.feed_seq)
        except StoreUnavailable as err:
            self.health.failed("item change feed", err)
            return
        self.health.ok()
        if changes:
            with self.served.lock:
                # A reload may have swapped meanwhile; the new state caught up by itself,
                # so these changes only concern the state they were read for.
                self._apply(state, changes)

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
        if previous is not None and moved:
            self.served.item_changed(state, previous.domain, item.item_id, None)
        self.served.item_changed(state, item.domain, item.item_id, vector)
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
        self.served.item_changed(state, meta.domain, item_id, None)
        return True
