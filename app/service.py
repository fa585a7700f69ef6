"""The recommendation service without HTTP: the composition root of its parts.

:class:`RecommendationService` builds the parts and wires them together; callers use the
parts themselves (``service.recommender``, ``service.items``, ...; the routers through
the per-part dependencies of app/http/deps.py). What each part owns, and the path of a
request through them: docs/ARCHITECTURE.md.

Concurrency: a request reads the current state *once* and uses that object to the end,
so a reload that swaps it never changes the model under a running request. Reads take
no lock (the engine's reads are thread-safe, ``DomainIndex`` serialises its own writes,
dict lookups are atomic). Writes that change a state hold the write lock.
Durability first: an item is written to the store before it becomes visible here.
"""

from __future__ import annotations

from app.api.schemas import (
    BundleStatus,
    ModelInfo,
)
from app.api.schemas_console import EvaluationReport, ReplicaInfo, ServiceStats
from app.catalogue import reports
from app.catalogue.browse import Browser
from app.catalogue.items import Items
from app.catalogue.queries import QueryEmbedder
from app.feedback.events import Feedback
from app.feedback.recording import RecommendationRecorder
from app.lifecycle.bundle_follow import BundleFollower
from app.lifecycle.bundle_follow import degraded as bundle_degraded
from app.lifecycle.canary import Arm, CanaryRule, arm_from_store
from app.lifecycle.canary_follow import CanaryAdmin, CanaryFollower
from app.lifecycle.engine import EngineFactory
from app.lifecycle.feed import ChangeFeed
from app.lifecycle.parts import Parts
from app.lifecycle.popularity import PopularityBook
from app.lifecycle.promotion import RegistryAdmin
from app.lifecycle.reload import ModelLoader
from app.lifecycle.replica_sync import ReplicaSync
from app.lifecycle.served import ServedModel
from app.lifecycle.state import ModelState
from app.runtime.background import BackgroundThreads
from app.runtime.idempotency import IdempotencyGuard
from app.runtime.stats import summarise
from app.runtime.store_health import StoreHealth
from app.runtime.telemetry import Metrics
from app.serving.recommend import Recommender
from app.settings import Settings
from app.store.base import Store, StoreUnavailable
from app.users.erasure import UserErasure
from app.users.interactions import Interactions
from model.registry import BundleRegistry


class RecommendationService:
    """Recommendations, item registration, interactions and model reload.

    ``start()`` loads the configured bundle in a background thread (``/readyz`` is 503
    until it is done) and starts following the store's item change feed.
    """

    def __init__(
        self,
        settings: Settings,
        store: Store,
        engine_factory: EngineFactory,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.engine_factory = engine_factory
        self.metrics = metrics or Metrics()
        self.threads = BackgroundThreads()
        self.popularity = PopularityBook(settings.popularity_refresh_s)
        self.health = StoreHealth(store, self.metrics, settings.store_retry_after_s)
        self.served = ServedModel()
        self.metrics.registry.register(self.served.collector())
        self.feed = ChangeFeed(self.served, store, self.health)
        self.sync = ReplicaSync(
            settings, self.served, self.feed, self.popularity, store, self.health
        )
        self.loader = ModelLoader(
            settings,
            engine_factory,
            self.served,
            self.feed,
            self.sync,
            self.metrics,
            self.threads,
        )
        parts = Parts(
            settings=settings,
            store=store,
            health=self.health,
            served=self.served,
            feed=self.feed,
            sync=self.sync,
            popularity=self.popularity,
            metrics=self.metrics,
            require_state=self.loader.require_state,
        )
        self.recorder = RecommendationRecorder(settings, store, self.metrics, self.health)
        self.recommender = Recommender(parts, self.recorder, QueryEmbedder(settings))
        self.served.listeners.append(self.recommender)  # keeps its top-N cache exact
        self.items = Items(parts)
        self.interactions = Interactions(parts)
        self.erasure = UserErasure(parts)
        self.idempotency = IdempotencyGuard(store, self.health, settings.idempotency_ttl_s)
        self.feedback = Feedback(settings, store, self.health, self.metrics, self.interactions)
        self.follower: BundleFollower | None = None
        self.registry_admin: RegistryAdmin | None = None
        self.canary_admin: CanaryAdmin | None = None
        if settings.registry_dir is not None:
            registry = BundleRegistry(settings.registry_dir, create=False)
            self.follower = BundleFollower(registry, store, self.loader)
            canary = CanaryFollower(
                registry,
                store,
                self.loader,
                CanaryRule(
                    settings.canary_min_events, settings.canary_metric, settings.canary_tolerance
                ),
                self.online_arm,
                check_s=settings.canary_check_s,
                auto=settings.canary_auto,
            )
            self.follower.canary = canary
            self.canary_admin = CanaryAdmin(self.follower, canary, settings.store_retry_after_s)
            self.metrics.registry.register(self.follower.collector())
            self.registry_admin = RegistryAdmin(self.follower, store, settings.store_retry_after_s)
        self.browser = Browser(parts, self.recommender)

    # --- lifecycle --------------------------------------------------------------------
    @property
    def state(self) -> ModelState | None:
        return self.served.state

    def start(self) -> None:
        """Begin the initial load (background) and the replica-sync loop."""
        follower = self.follower
        self.loader.start(follower.initial_path() if follower else None)
        stop = self.threads.stopping
        if self.sync.needed:
            # the sync thread also purges erased data from the store's files when due
            self.threads.start(lambda: self.sync.loop(stop, self.erasure.purge), "micrec-sync")
        if self.recorder.enabled:
            self.threads.start(lambda: self.recorder.loop(stop), "micrec-record")
        if follower is not None:
            interval = self.settings.registry_poll_s
            self.threads.start(lambda: follower.loop(stop, interval), "micrec-bundle")

    def stop(self, timeout: float = 60.0) -> None:
        """Stop the background threads (sync loop, a running load or warm-up, the model
        thread)."""
        self.threads.stop(timeout)
        self.recommender.stop()

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Block until a model serves (True) or the initial load ended without one."""
        return self.loader.wait_ready(timeout)

    # --- model / probes ---------------------------------------------------------------
    def model_info(self) -> ModelInfo:
        info = self.loader.require_state().info()
        if self.follower is None:
            return info
        return info.model_copy(update={"bundle_version": self.follower.serving()})

    def online_arm(self, model_version: str) -> Arm | None:
        """A version's online counts summed over domains, for the canary rule."""
        return arm_from_store(self.store, model_version)

    def bundle_status(self) -> BundleStatus | None:
        """Registry version served and wanted (None: not serving from a registry)."""
        return None if self.follower is None else self.follower.status()

    def degraded(self, bundle: BundleStatus | None = None) -> list[str]:
        """What does not work as it should; ``bundle``: the registry status the caller
        reports with it (read now when not given), so both say the same."""
        out = self.loader.degraded()
        if self.follower is not None:
            out += bundle_degraded(bundle or self.follower.status())
        return out

    def evaluation(self) -> EvaluationReport:
        return reports.evaluation(self.loader.require_state())

    def evaluation_plot(self, name: str) -> bytes:
        return reports.plot(self.loader.require_state(), name)

    def stats(self, *, admin: bool = True) -> ServiceStats:
        """The metrics summary; ``admin`` False leaves out the admin routes' rows."""
        state = self.state
        s = self.settings
        replica = ReplicaInfo(
            store=s.store_url.split(":", 1)[0],
            feed_seq=None if state is None else state.feed_seq,
            replayed=None if state is None else state.replayed,
            sync_interval_s=s.replica_sync_interval_s,
            popularity_refresh_s=s.popularity_refresh_s,
        )
        summary = summarise(self.metrics, admin_routes=admin)
        try:
            online = self.feedback.online()
        except StoreUnavailable as err:
            self.health.failed("online metrics", err)
            online = None
        canary = self.follower.status().canary if self.follower is not None else None
        return summary.model_copy(update={"replica": replica, "online": online, "canary": canary})
