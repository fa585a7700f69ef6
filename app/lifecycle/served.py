"""The model state this process serves now, and the lock every change to a state holds.

A (re)load builds a new :class:`~app.lifecycle.state.ModelState` off to the side; the change feed
(app/lifecycle/feed.py) then catches it up and swaps it in here with one reference assignment, so a
request that read the state keeps using the object it read, to its end. The **write
lock** is held by every change to a state (an item applied by the change feed) and by the
swap: the engine wants a single writer, and holding it makes "read feed position, apply,
swap" atomic with respect to writes, so no registration is lost by a concurrent reload.
Listeners (the top-N cache) are told of every item change and every swap; the gauges of
the served state (``micrec_index_items``, ``micrec_ready``, ...) are read from here.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol

import numpy as np
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from app.lifecycle.state import ModelState

if TYPE_CHECKING:
    from app.lifecycle.canary_route import CanaryRoute


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
        self.canary: CanaryRoute | None = None
        """The canary's loaded state and who gets it (app/lifecycle/canary_follow.py);
        replaced whole, read without a lock."""

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

    def collector(self) -> Collector:
        """Prometheus gauges of the served state (index sizes, registered items, version,
        readiness), read at scrape time so they are never stale."""
        return _ServedCollector(self)


class _ServedCollector(Collector):
    """Gauges read from the live model state at scrape time, so they are never stale."""

    def __init__(self, served: ServedModel) -> None:
        self._served = served

    def collect(self) -> Iterable[Metric]:
        state = self._served.state
        size = GaugeMetricFamily(
            "micrec_index_items", "Items in the serving index per domain", labels=["domain", "kind"]
        )
        registered = GaugeMetricFamily(
            "micrec_registered_items",
            "Items registered through the API per domain",
            labels=["domain"],
        )
        info = GaugeMetricFamily(
            "micrec_model_info", "Serving model version (value is always 1)", labels=["version"]
        )
        ready = GaugeMetricFamily("micrec_ready", "1 when a model is loaded and serving")
        ready.add_metric([], 0.0 if state is None else 1.0)
        if state is not None:
            info.add_metric([state.model_version], 1.0)
            for domain, index in state.indexes.items():
                size.add_metric([domain, index.kind], float(len(index)))
                registered.add_metric([domain], float(state.registered_count(domain)))
        yield from (size, registered, info, ready)
