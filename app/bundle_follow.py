"""Serving from a bundle registry: load the wanted version, follow promotions.

With ``registry_dir`` set, the version a replica should serve is the one announced in the
store (``Store.get_bundle_version``, written by ``micrec bundles promote/rollback`` through
app/promotion.py), or the registry's ``current`` pointer when nothing was announced.
:class:`BundleFollower` polls that every ``registry_poll_s`` in its own thread
(``micrec-bundle``) and, when it changes, reloads through the ordinary background reload
(app/reload.py): the old model serves until the new one is complete, and the first request
after the swap uses the new version.

A version that cannot be loaded here (missing on this host, fails its checksums, does not
match this code) leaves the old one serving: ``/readyz`` reports ``bundle: {serving,
wanted, error}`` and ``degraded``, and ``micrec_bundle_in_sync`` is 0. Each announcement is
tried once; announcing the same version again (promote it again) retries, a rollback or a
new promotion moves on. A process that *starts* while the wanted version cannot be loaded
has no old one: it falls back to the newest other promoted version (once) and reports the
same way.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from pathlib import Path

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from app.errors import Conflict
from app.reload import ModelLoader
from app.schemas import BundleStatus
from app.store.base import Store, StoreUnavailable, WantedBundle
from model.registry import BUNDLE_DIR, CURRENT, BundleRegistry, RegistryError

log = logging.getLogger("micrec.service")


class BundleFollower:
    """Which registry version this process serves and wants; reloads when they differ."""

    def __init__(self, registry: BundleRegistry, store: Store, loader: ModelLoader) -> None:
        self.registry = registry
        self.store = store
        self.loader = loader
        self._tried: WantedBundle | None = None
        """The last announcement acted on (loaded, or found unloadable)."""
        self._error: str | None = None
        """Why the tried version cannot be served (set when it cannot even be started, or
        when a fallback replaced its failed load)."""
        self._fell_back = False

    # --- what is wanted ---------------------------------------------------------------
    def wanted(self) -> WantedBundle | None:
        """The announced version, else the registry's current one (raises
        StoreUnavailable)."""
        announced = self.store.get_bundle_version()
        if announced is not None:
            return announced
        current = self.registry.current()
        return None if current is None else WantedBundle(current, 0.0)

    def initial_path(self) -> Path:
        """What to load at start-up: the wanted version (the registry's current one while
        the store is down). A registry without any version gives a path that does not
        exist, so the load fails and says so (``micrec serve`` checks this first)."""
        try:
            wanted = self.wanted()
        except StoreUnavailable as err:
            log.warning("bundle registry: store unavailable at start (%s); using current", err)
            current = self.registry.current()
            wanted = None if current is None else WantedBundle(current, 0.0)
        if wanted is None:
            return self.registry.root / CURRENT
        self._tried = wanted
        try:
            return self.registry.path(wanted.version)
        except RegistryError as err:
            self._error = str(err)
            return self.registry.root / CURRENT

    def serving(self) -> str | None:
        state = self.loader.feed.state
        return None if state is None else self.registry.version_of(state.bundle_path)

    # --- following --------------------------------------------------------------------
    def loop(self, stop: threading.Event, interval: float) -> None:
        """Thread body: one :meth:`tick` per ``interval`` until ``stop`` is set."""
        while not stop.wait(interval):
            try:
                self.tick()
            except Exception:  # the loop must survive anything; the next tick retries
                log.exception("bundle registry follow failed")

    def tick(self) -> None:
        """Start loading the wanted version when it is new (one store read)."""
        try:
            wanted = self.wanted()
        except StoreUnavailable:
            return  # the store's health is reported by the change feed and /readyz
        if wanted is None:
            return
        if wanted == self._tried:
            self._fall_back_if_nothing_serves(wanted.version)
            return
        self._fell_back = False
        if wanted.version == self.serving():
            self._tried, self._error = wanted, None
            return
        try:
            path = self.registry.path(wanted.version)
        except RegistryError as err:
            log.error("bundle %s wanted but cannot be served here: %s", wanted.version, err)
            self._tried, self._error = wanted, str(err)
            return
        try:
            self.loader.start(path)
        except Conflict:
            return  # another load runs; the next tick tries again
        log.info("bundle %s wanted (was %s): loading", wanted.version, self.serving())
        self._tried, self._error = wanted, None

    def _fall_back_if_nothing_serves(self, wanted: str) -> None:
        """A process that starts while the wanted version cannot be loaded here has no old
        version to keep serving: it loads the newest other promoted version once (not
        refused), and keeps reporting the wanted one as not loaded."""
        if self._fell_back or self.loader.feed.state is not None:
            return
        error = self._error or self._load_error(wanted)
        if error is None:  # still loading, or not failed
            return
        self._fell_back = True
        for version in reversed(self.registry.promotions()):
            if version == wanted or self.registry.show(version).refused:
                continue
            try:
                self.loader.start(self.registry.path(version))
            except Conflict:
                self._fell_back = False  # a load runs; try again next tick
                return
            log.warning("bundle %s cannot be loaded (%s); serving %s", wanted, error, version)
            self._error = error
            return

    # --- reporting --------------------------------------------------------------------
    def status(self) -> BundleStatus:
        serving = self.serving()
        wanted = self._tried.version if self._tried else None
        error = None
        if wanted is not None and wanted != serving:
            error = self._error or self._load_error(wanted)
        return BundleStatus(serving=serving, wanted=wanted, error=error)

    def _load_error(self, wanted: str) -> str | None:
        """The reload's error when it was the wanted version's load that failed, with the
        bundle path replaced by the version (/readyz is unauthenticated)."""
        status = self.loader.status()
        path = str(self.registry.versions_dir / wanted / BUNDLE_DIR)
        if status.status != "failed" or status.bundle_path != path:
            return None
        return (status.error or "load failed").replace(path, wanted)

    def collector(self) -> Collector:
        return _FollowerCollector(self)


class _FollowerCollector(Collector):
    def __init__(self, follower: BundleFollower) -> None:
        self.follower = follower

    def collect(self) -> Iterable[Metric]:
        s = self.follower.status()
        in_sync = GaugeMetricFamily(
            "micrec_bundle_in_sync",
            "1 when this process serves the registry version it was told to serve",
        )
        in_sync.add_metric([], 1.0 if s.wanted is None or s.wanted == s.serving else 0.0)
        info = GaugeMetricFamily(
            "micrec_bundle_version_info",
            "Registry version served and wanted (value is always 1)",
            labels=["serving", "wanted"],
        )
        info.add_metric([s.serving or "", s.wanted or ""], 1.0)
        yield from (in_sync, info)
