"""Serving from a bundle registry: load the wanted version, follow promotions.

With ``registry_dir`` set, the version a replica should serve is the one announced in the
store (``Store.get_bundle_version``, written by ``micrec bundles promote/rollback`` through
app/lifecycle/promotion.py), or the registry's ``current`` pointer when nothing was announced.
:class:`BundleFollower` reads it every ``registry_poll_s`` in its own thread
(``micrec-bundle``; an admin promote or rollback also at once) and converges on it:
whenever the version served is not the wanted one and no load runs, it loads the wanted
one through the ordinary background reload (app/lifecycle/reload.py). The old model serves until
the new one is complete, and the first request after the swap uses the new version.

One load runs at a time. An announcement that arrives while one runs (a rollback while
the promoted version loads) is acted on when it ends, and a load whose version is no
longer wanted by then is dropped rather than served (``superseded`` in the reload status).
Whatever ends up serving (a load that became stale just after that check, an admin reload
of another bundle), the next read sees that it is not the wanted version and loads that
one again. While the store cannot be read, the last version read stays the wanted one.

Until the wanted version serves, ``/readyz`` reports ``degraded`` and why (it is loading,
a stale load runs first, or it could not be loaded), with ``bundle: {serving, wanted,
loading, error}``; ``micrec_bundle_in_sync`` is 0.

A version that cannot be loaded here (missing on this host, fails its checksums, does not
match this code) leaves the old one serving, with the ``error``. Each announcement is tried
once; announcing the same version again (promote it again) retries, a rollback or a new
promotion moves on. A process that *starts* while the wanted version cannot be loaded has
no old one: it falls back to the newest other promoted version (once) and reports the
same way.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from app.api.errors import Conflict
from app.api.schemas import BundleStatus, CanaryStatus
from app.lifecycle.reload import ModelLoader
from app.store.base import Store, StoreUnavailable, WantedBundle
from model.registry import BUNDLE_DIR, CURRENT, BundleRegistry, RegistryError

log = logging.getLogger("micrec.service")


class CanarySide(Protocol):
    """The canary's part of a tick (app/lifecycle/canary_follow.py)."""

    def tick(self, wanted_main: str | None, serving_main: str | None) -> bool: ...

    def status(self) -> CanaryStatus | None: ...


class BundleFollower:
    """Which registry version this process serves and wants; reloads until they agree."""

    def __init__(self, registry: BundleRegistry, store: Store, loader: ModelLoader) -> None:
        self.registry = registry
        self.store = store
        self.loader = loader
        self._lock = threading.Lock()
        """One tick at a time (the poll thread and admin requests both tick)."""
        self._wanted: WantedBundle | None = None
        """The last announcement read (kept while the store cannot be read)."""
        self._attempted = False
        """A load of the wanted version was started under this announcement."""
        self._error: str | None = None
        """Why the wanted version cannot be served under this announcement (not tried
        again until it is announced again)."""
        self._fell_back = False
        self.canary: CanarySide | None = None
        """The canary side (app/lifecycle/canary_follow.py), set by the service."""

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
        self._announced(wanted)
        try:
            path = self.registry.path(wanted.version)
        except RegistryError as err:
            self._error = str(err)
            return self.registry.root / CURRENT
        self._attempted = True
        return path

    def serving(self) -> str | None:
        state = self.loader.served.state
        return None if state is None else self.registry.version_of(state.bundle_path)

    def loading(self) -> str | None:
        """The registry version being loaded now (None: no load runs, or not one of the
        registry's versions)."""
        status = self.loader.status()
        if status.status != "loading" or status.bundle_path is None:
            return None
        return self.registry.version_of(status.bundle_path)

    # --- following --------------------------------------------------------------------
    def loop(self, stop: threading.Event, interval: float) -> None:
        """Thread body: one :meth:`tick` per ``interval`` until ``stop`` is set."""
        while not stop.wait(interval):
            try:
                self.tick()
            except Exception:  # the loop must survive anything; the next tick retries
                log.exception("bundle registry follow failed")

    def tick(self) -> None:
        """Read the wanted version (one store read) and start loading it unless it serves,
        could not be loaded under this announcement, or a load runs."""
        with self._lock:
            try:
                wanted = self.wanted()
            except StoreUnavailable:
                # the store's health is reported by the change feed and /readyz; meanwhile
                # the last version read is still the one to serve
                wanted = self._wanted
            if wanted is None:
                return
            if wanted != self._wanted:
                self._announced(wanted)
            if self.canary is not None and self.canary.tick(wanted.version, self.serving()):
                return  # the promoted canary's state serves (or will, once a load ends)
            self._converge(wanted.version)

    def _announced(self, wanted: WantedBundle) -> None:
        """A new announcement: its version gets one try (even if an earlier one failed)."""
        self._wanted, self._attempted, self._error, self._fell_back = wanted, False, None, False

    def _converge(self, wanted: str) -> None:
        if self.serving() == wanted:
            return  # a load still running for another version is dropped when it ends
        if self._error is None and self._attempted:
            self._error = self._load_error(wanted)  # None unless its load failed
            if self._error is not None:
                log.error("bundle %s cannot be loaded here: %s", wanted, self._error)
        if self._error is not None:
            self._fall_back_if_nothing_serves(wanted)
            return
        if self.loader.status().status == "loading":
            return  # one load at a time: a later tick, once it ended
        try:
            path = self.registry.path(wanted)
        except RegistryError as err:
            log.error("bundle %s wanted but cannot be served here: %s", wanted, err)
            self._error = str(err)
            return
        try:
            self.loader.start(path, keep=lambda: self._still_wanted(wanted))
        except Conflict:
            return  # a load began since the check; a later tick
        log.info("bundle %s wanted (serving %s): loading", wanted, self.serving())
        self._attempted = True

    def _still_wanted(self, version: str) -> bool:
        """Asked by the loader before it serves ``version``: not after a newer
        announcement of another version (a rollback during the load)."""
        wanted = self._wanted
        return wanted is None or wanted.version == version

    def _fall_back_if_nothing_serves(self, wanted: str) -> None:
        """A process that starts while the wanted version cannot be loaded here has no old
        version to keep serving: it loads the newest other promoted version once (not
        refused), and keeps reporting the wanted one as not loaded."""
        if self._fell_back or self.loader.served.state is not None:
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
            log.warning("bundle %s cannot be loaded (%s); serving %s", wanted, self._error, version)
            return

    # --- reporting --------------------------------------------------------------------
    def status(self) -> BundleStatus:
        serving = self.serving()
        wanted = self._wanted.version if self._wanted else None
        error = None
        if wanted is not None and wanted != serving:
            error = self._error
            if error is None and self._attempted:  # a failure the next tick will see
                error = self._load_error(wanted)
        canary = self.canary.status() if self.canary is not None else None
        return BundleStatus(
            serving=serving, wanted=wanted, loading=self.loading(), error=error, canary=canary
        )

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


def degraded(status: BundleStatus) -> list[str]:
    """What /readyz says while ``status`` is not serving the wanted version."""
    wanted, loading = status.wanted, status.loading
    if wanted is None or wanted == status.serving:
        return []
    serving = status.serving or "a bundle outside the registry"
    if status.error is not None:
        return [f"bundle {wanted} could not be loaded; serving {serving}"]
    if loading == wanted:
        return [f"bundle {wanted} is loading; serving {serving} until it is complete"]
    if loading is not None:
        return [f"bundle {wanted} wanted; serving {serving}; loads once {loading}'s load ends"]
    return [f"bundle {wanted} wanted; serving {serving}: reloading"]


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
