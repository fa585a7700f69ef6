"""What the per-resource classes (app/recommend.py, items.py, interactions.py) share.

The service builds one :class:`Parts` and hands it to each; a resource class reads the
parts it needs as attributes (``self.store``, ``self.feed``, ...).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from app.feed import ChangeFeed
from app.metrics import Metrics
from app.popularity import PopularityBook
from app.settings import Settings
from app.state import ModelState
from app.store.base import Store
from app.store.health import StoreHealth


@dataclass(frozen=True)
class Parts:
    settings: Settings
    store: Store
    health: StoreHealth
    feed: ChangeFeed
    popularity: PopularityBook
    metrics: Metrics
    require_state: Callable[[], ModelState]
    """The current state, or NotReady (``ModelLoader.require_state``)."""


class Resource:
    """Base of the resource classes: the shared parts as attributes."""

    def __init__(self, parts: Parts) -> None:
        self.settings = parts.settings
        self.store = parts.store
        self.health = parts.health
        self.feed = parts.feed
        self.popularity = parts.popularity
        self.metrics = parts.metrics
        self.require_state = parts.require_state
