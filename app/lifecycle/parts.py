"""What the per-resource classes (app/serving/recommend.py, items.py, interactions.py, erasure.py)
share.

The service builds one :class:`Parts` and hands it to each; a resource class reads the
parts it needs as attributes (``self.store``, ``self.feed``, ...).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from app.lifecycle.feed import ChangeFeed
from app.lifecycle.popularity import PopularityBook
from app.lifecycle.replica_sync import ReplicaSync
from app.lifecycle.served import ServedModel
from app.lifecycle.state import ModelState
from app.runtime.store_health import StoreHealth
from app.runtime.telemetry import Metrics
from app.settings import Settings
from app.store.base import Store


class ErasedUsers:
    """User ids this process has seen erased (erased here, or reported by the store on a
    read). Used only while the store cannot be read, so that an outage does not bring back
    the bundle history of a user this process knows was erased."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ids: set[str] = set()

    def add(self, user_id: str) -> None:
        with self._lock:
            self._ids.add(user_id)

    def __contains__(self, user_id: object) -> bool:
        with self._lock:
            return user_id in self._ids


@dataclass(frozen=True)
class Parts:
    settings: Settings
    store: Store
    health: StoreHealth
    served: ServedModel
    feed: ChangeFeed
    sync: ReplicaSync
    popularity: PopularityBook
    metrics: Metrics
    require_state: Callable[[], ModelState]
    """The current state, or NotReady (``ModelLoader.require_state``)."""
    erased: ErasedUsers = field(default_factory=ErasedUsers)
    """Users this process knows are erased (app/users/erasure.py)."""


class Resource:
    """Base of the resource classes: the shared parts as attributes."""

    def __init__(self, parts: Parts) -> None:
        self.settings = parts.settings
        self.store = parts.store
        self.health = parts.health
        self.served = parts.served
        self.feed = parts.feed
        self.sync = parts.sync
        self.popularity = parts.popularity
        self.metrics = parts.metrics
        self.require_state = parts.require_state
        self.erased = parts.erased
