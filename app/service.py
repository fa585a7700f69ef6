"""The recommendation service without HTTP: the composition root of its parts.

Routers call :class:`RecommendationService`; each method hands the call to the part that
owns it (docs/ARCHITECTURE.md has the map):

* app/state.py - ``ModelState``: one loaded model (engine, domain indexes, registered items)
* app/reload.py - ``ModelLoader``: background (re)load, warm-up, status, readiness
* app/feed.py - ``ChangeFeed``: replay, catch-up, replica sync; owns the write lock and
  the published state
* app/popularity.py, app/fallbacks.py - popularity counts and the fallback strategies
* app/recommend.py, app/items.py, app/interactions.py, app/erasure.py - one class per API
  resource
* app/store/health.py - ``StoreHealth``: store failures, 503s, the readiness ping
* app/idempotency.py - ``IdempotencyGuard``: writes sent with an Idempotency-Key run once
* app/bundle_follow.py - ``BundleFollower``: serving from a bundle registry, following
  promotions (only with ``registry_dir``)

Concurrency: a request reads the current state *once* and uses that object to the end,
so a reload that swaps it never changes the model under a running request. Reads take
no lock (the engine's reads are thread-safe, ``DomainIndex`` serialises its own writes,
dict lookups are atomic). Writes that change a state hold the feed's write lock.
Durability first: an item is written to the store before it becomes visible here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from app import reports
from app.browse import Browser
from app.bundle_follow import BundleFollower
from app.bundle_follow import degraded as bundle_degraded
from app.engine import EngineFactory
from app.erasure import Users
from app.feed import ChangeFeed
from app.idempotency import IdempotencyGuard
from app.interactions import Interactions
from app.items import Items
from app.metrics import Metrics
from app.parts import Parts
from app.popularity import PopularityBook
from app.promotion import RegistryAdmin
from app.recommend import Recommender
from app.reload import ModelLoader
from app.schemas import (
    BundleStatus,
    ItemOut,
    ModelInfo,
    ReloadStatus,
)
from app.schemas_console import EvaluationReport, ReplicaInfo, ServiceStats
from app.settings import Settings
from app.state import ModelState
from app.stats import summarise
from app.store.base import Store
from app.store.health import StoreHealth
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
        self.popularity = PopularityBook(settings.popularity_refresh_s)
        self.health = StoreHealth(store, self.metrics, settings.store_retry_after_s)
        self.feed = ChangeFeed(settings, store, self.health, self.popularity)
        self.loader = ModelLoader(settings, engine_factory, self.feed, self.metrics)
        parts = Parts(
            settings,
            store,
            self.health,
            self.feed,
            self.popularity,
            self.metrics,
            self.loader.require_state,
        )
        self.recommender = Recommender(parts)
        self.feed.listeners.append(self.recommender)  # keeps its top-N cache exact
        self.items = Items(parts)
        self.interactions = Interactions(parts)
        self.users = Users(parts)
        self.idempotency = IdempotencyGuard(store, self.health, settings.idempotency_ttl_s)
        # The resource methods as their owners define them (signatures and docs there).
        self.recommend = self.recommender.recommend
        self.recommend_async = self.recommender.recommend_async
        self.similar = self.recommender.similar
        self.get_item = self.items.get
        self.register_item = self.items.register
        self.delete_item = self.items.delete
        self.add_interactions = self.interactions.add
        self.erase_user = self.users.erase
        self.idempotent = self.idempotency.run
        self.follower: BundleFollower | None = None
        self.registry_admin: RegistryAdmin | None = None
        if settings.registry_dir is not None:
            self.follower = BundleFollower(
                BundleRegistry(settings.registry_dir, create=False), store, self.loader
            )
            self.metrics.registry.register(self.follower.collector())
            self.registry_admin = RegistryAdmin(self.follower, store, settings.store_retry_after_s)
        self.browser = Browser(parts, self.recommender)
        self.search_items = self.browser.search
        self.item_details = self.browser.details
        self.item_picture = self.browser.picture
        self.user_history = self.browser.history

    # --- lifecycle --------------------------------------------------------------------
    @property
    def state(self) -> ModelState | None:
        return self.feed.state

    def require_state(self) -> ModelState:
        return self.loader.require_state()

    def start(self) -> None:
        """Begin the initial load (background) and the replica-sync loop."""
        follower = self.follower
        self.loader.start(follower.initial_path() if follower else None)
        stop = self.loader.stopping
        if self.settings.replica_sync_interval_s > 0 or self.settings.popularity_refresh_s > 0:
            # the sync thread also purges erased data from the store's files when due
            self.loader.run_in_background(
                lambda: self.feed.sync_loop(stop, self.users.purge), "micrec-sync"
            )
        if follower is not None:
            interval = self.settings.registry_poll_s
            self.loader.run_in_background(lambda: follower.loop(stop, interval), "micrec-bundle")

    def stop(self, timeout: float = 60.0) -> None:
        """Stop the background threads (sync loop, a running load or warm-up, the model
        thread)."""
        self.loader.stop(timeout)
        self.recommender.stop()

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Block until a model serves (True) or the initial load ended without one."""
        return self.loader.wait_ready(timeout)

    def wait_reload(self, timeout: float | None = None) -> ReloadStatus:
        """Block until no reload is running; returns the final status."""
        return self.loader.wait(timeout)

    def reload_status(self) -> ReloadStatus:
        return self.loader.status()

    def start_reload(self, bundle_path: str | Path | None) -> ReloadStatus:
        """Load ``bundle_path`` (default: the current one) in the background; 409 if a load
        is already running. The old model keeps serving until the new one is complete."""
        return self.loader.start(bundle_path)

    def sync_once(self, *, follow_feed: bool = True) -> None:
        """Apply other replicas' item changes and refresh popularity (one tick)."""
        self.feed.sync_once(follow_feed=follow_feed)

    # --- resources (besides those bound in __init__) ------------------------------
    def update_item(self, item_id: str, **fields: Any) -> tuple[ItemOut, bool]:
        """PUT semantics: create or replace a registered item (bundle items: 409)."""
        return self.items.register(item_id=item_id, replace=True, **fields)

    # --- model / probes ---------------------------------------------------------------
    def model_info(self) -> ModelInfo:
        info = self.require_state().info()
        if self.follower is None:
            return info
        return info.model_copy(update={"bundle_version": self.follower.serving()})

    def bundle_status(self) -> BundleStatus | None:
        """Registry version served and wanted (None: not serving from a registry)."""
        return None if self.follower is None else self.follower.status()

    def store_status(self) -> tuple[bool, str | None]:
        """(ok, detail): pings the store now (readiness reports degradation)."""
        return self.health.status()

    def degraded(self, bundle: BundleStatus | None = None) -> list[str]:
        """What does not work as it should; ``bundle``: the registry status the caller
        reports with it (read now when not given), so both say the same."""
        out = self.loader.degraded()
        if self.follower is not None:
            out += bundle_degraded(bundle or self.follower.status())
        return out

    def evaluation(self) -> EvaluationReport:
        return reports.evaluation(self.require_state())

    def evaluation_plot(self, name: str) -> bytes:
        return reports.plot(self.require_state(), name)

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
        return summarise(self.metrics, admin_routes=admin).model_copy(update={"replica": replica})
