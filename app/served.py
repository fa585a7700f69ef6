"""The model state this process serves now, and the lock every change to a state holds.

A (re)load builds a new :class:`~app.state.ModelState` off to the side; the change feed
(app/feed.py) then catches it up and swaps it in here with one reference assignment, so a
request that read the state keeps using the object it read, to its end. The **write
lock** is held by every change to a state (an item applied by the change feed) and by the
swap: the engine wants a single writer, and holding it makes "read feed position, apply,
swap" atomic with respect to writes, so no registration is lost by a concurrent reload.
Listeners (the top-N cache) are told of every item change and every swap.
"""

from __future__ import annotations

import threading
from typing import Protocol

import numpy as np

from app.state import ModelState


class StateListener(Protocol):
    def item_changed(
        self, state: ModelState, domain: str, item_id: str, vector: np.ndarray | None
    ) -> None:
        """``item_id`` was registered in (``vector``) or removed from (None) ``domain``'s
        index of ``state``; called under the write lock, after the change."""

    def published(self, state: ModelState) -> None:
        """``state`` is now the current one."""


class ServedModel:
    def __init__(self) -> None:
        self.lock = threading.RLock()
        """The write lock: held by every change to a state and by the swap."""
        self._state: ModelState | None = None
        self.listeners: list[StateListener] = []
        """Told of every item change applied and of every swap."""

    @property
    def state(self) -> ModelState | None:
        """The state serving now (None until the first load succeeds)."""
        return self._state

    def swap(self, new: ModelState) -> ModelState | None:
        """Serve ``new`` from now on (the caller holds the write lock); returns the state
        it replaced."""
        old, self._state = self._state, new
        for listener in self.listeners:
            listener.published(new)
        return old

    def item_changed(
        self, state: ModelState, domain: str, item_id: str, vector: np.ndarray | None
    ) -> None:
        """Tell the listeners of an item change applied to ``state``."""
        for listener in self.listeners:
            listener.item_changed(state, domain, item_id, vector)
