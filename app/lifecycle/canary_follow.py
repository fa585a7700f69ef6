"""A replica's side of a canary (app/lifecycle/canary.py): load the candidate next to the
current version, route by the announced share and salt, apply the rule, follow the end.

:class:`CanaryFollower` is ticked by the bundle follower (thread ``micrec-bundle``, every
``registry_poll_s``) with the main version it wants:

* a canary announced and not decided "rollback", for a version other than the main one:
  its state is built in the background (``micrec-canary``, one at a time; the current
  version serves everybody meanwhile), then ``ServedModel.canary`` routes its share of
  users to it. A new salt or share for the same version re-routes without a reload;
* the canary's version became the wanted main version (it was promoted): its loaded
  state is served as the main one at once (``ModelLoader.adopt``: no second load, no user
  of the share sent back to the old version meanwhile);
* no canary, or one decided "rollback": the candidate is dropped (its users get the
  current version from the next request on);
* every ``canary_check_s`` with ``canary_auto``: the online metrics of both versions
  (``metrics_of``: app/feedback's counters by model version) go through the rule; a
  decision is recorded in the store by exactly one replica, which acts on it.

Registered items reach the candidate's state through the change feed (the sync loop
follows it for both states; app/lifecycle/replica_sync.py).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from app.api.errors import Conflict, InvalidInput, Unavailable
from app.api.schemas import CanaryArm, CanaryOut, CanaryStatus
from app.lifecycle.bundle_follow import BundleFollower
from app.lifecycle.canary import (
    Arm,
    CanaryRule,
    Outcome,
    Verdict,
    finish_canary,
    start_canary,
)
from app.lifecycle.canary_route import CanaryRoute
from app.lifecycle.promotion import http_errors
from app.lifecycle.reload import ModelLoader
from app.lifecycle.state import ModelState
from app.store.base import Canary, Store, StoreUnavailable
from model.registry import BundleRegistry, RegistryError

log = logging.getLogger("micrec.service")

MetricsOf = Callable[[str], Arm | None]
"""model version -> its online counts summed over domains (None: not available)."""


class CanaryFollower:
    def __init__(
        self,
        registry: BundleRegistry,
        store: Store,
        loader: ModelLoader,
        rule: CanaryRule,
        metrics_of: MetricsOf,
        *,
        check_s: float,
        auto: bool,
    ) -> None:
        self.registry = registry
        self.store = store
        self.loader = loader
        self.served = loader.served
        self.rule = rule
        self.metrics_of = metrics_of
        self.check_s = check_s
        self.auto = auto
        self._canary: Canary | None = None
        """The last announcement read (kept while the store cannot be read)."""
        self._loaded: tuple[str, ModelState] | None = None
        """(registry version, state) of the candidate built here."""
        self._loading: str | None = None
        self._failed: dict[str, str] = {}
        """version -> why it could not be loaded (not tried again for that salt)."""
        self._next_check = 0.0
        self._verdict: Verdict | None = None
        self._arms: tuple[Arm | None, Arm | None] = (None, None)
        self._lock = threading.Lock()

    # --- following --------------------------------------------------------------------
    def tick(self, wanted_main: str | None, serving_main: str | None) -> bool:
        """One step (module docstring); True when the candidate's state became the main one
        (the caller then has nothing to load)."""
        try:
            canary = self.store.get_canary()
        except StoreUnavailable:
            canary = self._canary
        if canary is None or self._canary is None or canary.salt != self._canary.salt:
            self._failed.clear()
            self._verdict, self._arms = None, (None, None)
        self._canary = canary
        loaded = self._loaded
        if loaded is not None and wanted_main == loaded[0] and serving_main != wanted_main:
            # promoted: its users keep it, everybody else gets it as soon as a load ends
            if self.loader.adopt(loaded[1]):
                log.info("canary %s promoted: its loaded state serves everybody", loaded[0])
                self._drop()
            return True
        live = (
            canary is not None
            and canary.decided != "rollback"
            and canary.version != serving_main
            and canary.version not in self._failed
        )
        if not live:
            self._drop()
            return False
        assert canary is not None
        if loaded is None or loaded[0] != canary.version:
            self._drop()
            self._start_load(canary.version)
            return False
        self.served.canary = CanaryRoute(loaded[1], canary.version, canary.share, canary.salt)
        if not self.loader.sync.needed:  # else the sync loop follows the feed for both
            self.loader.feed.follow(loaded[1])
        if canary.decided is None and time.monotonic() >= self._next_check:
            self._next_check = time.monotonic() + self.check_s
            self._judge(canary, loaded[1])
        return False

    def _drop(self) -> None:
        if self._loaded is not None or self.served.canary is not None:
            self.served.canary = None
            self._loaded = None

    def _start_load(self, version: str) -> None:
        with self._lock:
            if self._loading is not None:
                return
            self._loading = version
        try:
            path = self.registry.path(version)
        except RegistryError as err:
            self._failed[version] = str(err)
            self._loading = None
            return
        self.loader.threads.start(lambda: self._load(version, path), "micrec-canary")

    def _load(self, version: str, path: Path) -> None:
        try:
            state = self.loader.build(path)
        except Exception as err:  # the current version keeps serving everybody
            log.error("canary %s could not be loaded: %s", version, err)
            self._failed[version] = f"{type(err).__name__}: {err}"
            self._loading = None
            return
        self._loaded = (version, state)
        self._loading = None  # after _loaded: a tick in between must not load it again
        log.info("canary %s loaded (%s)", version, state.model_version)

    # --- the rule ---------------------------------------------------------------------
    def _judge(self, canary: Canary, candidate: ModelState) -> None:
        main = self.served.state
        if main is None:
            return
        cur, cand = self.metrics_of(main.model_version), self.metrics_of(candidate.model_version)
        self._arms = (cur, cand)
        if cur is None or cand is None:
            return
        self._verdict = verdict = self.rule.judge(cur, cand)
        if verdict.outcome == "wait" or not self.auto:
            return
        if finish_canary(self.registry, self.store, canary, verdict.outcome, verdict.reason):
            log.warning("canary %s: %s (%s)", canary.version, verdict.outcome, verdict.reason)

    # --- by hand (micrec bundles canary, /v1/admin/bundles/canary) --------------------
    def start(self, version: str, share: float, *, force: bool = False) -> Canary:
        """Announce ``version`` as the canary (app/lifecycle/canary.py) and follow it now."""
        canary = start_canary(self.registry, self.store, version, share, force=force)
        self._canary = None  # re-read: a new salt
        return canary

    def decide(self, outcome: Outcome, reason: str) -> bool:
        """Promote or roll back the running canary now (False: none runs, or it was
        decided already)."""
        canary = self.store.get_canary()
        if canary is None or canary.decided is not None:
            return False
        return finish_canary(self.registry, self.store, canary, outcome, reason)

    # --- reporting --------------------------------------------------------------------
    def status(self) -> CanaryStatus | None:
        c = self._canary
        if c is None:
            return None
        route = self.served.canary
        loaded = route is not None and route.version == c.version  # routed here
        main = self.served.state
        cur, cand = self._arms
        reason = self._verdict.reason if self._verdict else None
        if c.version in self._failed:
            reason = f"could not be loaded here: {self._failed[c.version]}"
        return CanaryStatus(
            version=c.version,
            share=c.share,
            started_at=c.started_at,
            decided=c.decided,
            loaded=loaded,
            verdict=None if self._verdict is None and reason is None else (
                f"{self._verdict.outcome if self._verdict else 'failed'}: {reason}"
            ),
            current=self._arm(self.registry.version_of(main.bundle_path) if main else None,
                              main.model_version if main else None, cur),
            candidate=self._arm(c.version, route.state.model_version if route and loaded
                                else None, cand),
        )  # fmt: skip

    def _arm(self, version: str | None, model_version: str | None, arm: Arm | None) -> CanaryArm:
        if arm is None:
            return CanaryArm(version=version, model_version=model_version)
        return CanaryArm(
            version=version,
            model_version=model_version,
            impressions=arm.impressions,
            clicks=arm.clicks,
            observed=arm.observed,
            hits=arm.hits,
            value=arm.value(self.rule.metric),
        )


class CanaryAdmin:
    """The admin API's canary operations (``/v1/admin/bundles/canary``, and ``canary`` on
    promote), with registry and store errors as HTTP errors; this process follows at once,
    the other replicas within their poll interval."""

    def __init__(
        self, follower: BundleFollower, canary: CanaryFollower, retry_after_s: int
    ) -> None:
        self.follower = follower
        self.canary = canary
        self.retry_after_s = retry_after_s

    def start_canary(self, version: str, share: float, *, force: bool) -> CanaryOut:
        canary = self._canary_side()
        with http_errors(), _store_errors(self.retry_after_s):
            canary.start(version, share, force=force)
        self.follower.tick()
        return self.canary_status()

    def canary_status(self) -> CanaryOut:
        return CanaryOut(canary=self._canary_side().status())

    def decide_canary(self, outcome: str, reason: str) -> CanaryOut:
        canary = self._canary_side()
        if outcome not in ("promote", "rollback"):
            raise InvalidInput("outcome must be promote or rollback")
        with http_errors(), _store_errors(self.retry_after_s):
            done = canary.decide("promote" if outcome == "promote" else "rollback", reason)
        if not done:
            raise Conflict("no canary runs, or it was decided already")
        self.follower.tick()
        out = CanaryOut(canary=canary.status())
        return out.model_copy(
            update={"outcome": "promoted" if outcome == "promote" else "rolled back"}
        )

    def _canary_side(self) -> CanaryFollower:
        return self.canary


@contextmanager
def _store_errors(retry_after_s: int) -> Iterator[None]:
    try:
        yield
    except StoreUnavailable as err:
        raise Unavailable(
            f"the store could not be read or written: {err}", retry_after_s=retry_after_s
        ) from None
