"""Loading and reloading the model: background load, warm-up, status and readiness.

A load runs in a background thread: the engine factory loads the bundle, the state is
built (app/lifecycle/state.py) and the change feed replays the registered items into it, then the
feed publishes it. The old model serves until the new one is complete; a failed load
keeps it and reports why (to an admin: the error may name paths). ``/readyz`` is 503
until the first load succeeded. A load started with ``keep`` (the bundle follower's) asks
it once the new state is built and drops that state when it is no longer wanted
(``superseded``: the old model keeps serving).
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from app.api.errors import Conflict, NotReady
from app.api.schemas import ReloadStatus
from app.index.milvus import MilvusDomainIndex
from app.lifecycle.engine import EngineFactory
from app.lifecycle.feed import ChangeFeed
from app.lifecycle.replica_sync import ReplicaSync
from app.lifecycle.served import ServedModel
from app.lifecycle.state import ModelState, build_state
from app.runtime.background import BackgroundThreads
from app.runtime.telemetry import Metrics
from app.settings import Settings

log = logging.getLogger("micrec.service")

LOAD_FAILED = "the model load failed; an admin sees why in GET /v1/admin/reload"
"""What unauthenticated answers say about a failed load (its error names paths)."""


class ModelLoader:
    """Loads models (one at a time) and owns the reload status and readiness."""

    def __init__(
        self,
        settings: Settings,
        engine_factory: EngineFactory,
        served: ServedModel,
        feed: ChangeFeed,
        sync: ReplicaSync,
        metrics: Metrics,
        threads: BackgroundThreads,
    ) -> None:
        self.settings = settings
        self.engine_factory = engine_factory
        self.served = served
        self.feed = feed
        self.sync = sync
        self.metrics = metrics
        self.threads = threads
        self._lock = threading.Lock()
        """Held while a load runs (one at a time)."""
        self._status = ReloadStatus(status="idle")
        self._ready = threading.Event()
        self._load_done = threading.Event()
        self._idle = threading.Event()
        """Set while no load runs (the status is not "loading")."""
        self._idle.set()

    # --- state and readiness ----------------------------------------------------------
    def require_state(self) -> ModelState:
        state = self.served.state
        if state is None:
            if self._status.status == "failed":
                raise NotReady(f"no model loaded: {LOAD_FAILED}")
            raise NotReady("the model is still loading; retry shortly")
        return state

    def status(self) -> ReloadStatus:
        state = self.served.state
        return self._status.model_copy(
            update={"model_version": state.model_version if state else None}
        )

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Block until a model serves (True) or the initial load ended without one."""
        self._load_done.wait(timeout)
        return self._ready.is_set()

    def wait(self, timeout: float | None = None) -> ReloadStatus:
        """Block until no reload is running (at most ``timeout``); returns the status."""
        self._idle.wait(timeout)
        return self.status()

    def degraded(self) -> list[str]:
        out = []
        state = self.served.state
        if state is not None and not state.replayed:
            out.append("registered items not replayed yet (store unavailable at load)")
        if self._status.status == "failed" and state is not None:
            out.append(f"last reload failed ({LOAD_FAILED})")
        if state is not None:
            for modality, why in sorted(state.engine.encoders_unavailable.items()):
                out.append(
                    f"{modality} encoder unavailable: {why}; registrations and queries that "
                    "need it answer 503"
                )
            out += sorted(
                {
                    p
                    for i in state.indexes.values()
                    if isinstance(i, MilvusDomainIndex) and (p := i.problem())
                }
            )
        return out

    # --- loading ----------------------------------------------------------------------
    def start(
        self, bundle_path: str | Path | None, *, keep: Callable[[], bool] | None = None
    ) -> ReloadStatus:
        """Load ``bundle_path`` (default: the current one) in the background; 409 if a load
        is already running. The old model keeps serving until the new one is complete.

        ``keep``: asked once the new state is built, before it replaces the serving one;
        False drops it (status ``superseded``). Never asked while nothing serves."""
        if not self._lock.acquire(blocking=False):
            raise Conflict("a model reload is already running; see GET /v1/admin/reload")
        current = self.served.state
        path = Path(
            bundle_path
            if bundle_path is not None
            else (current.bundle_path if current else self.settings.bundle_path)
        )
        started = ReloadStatus(
            status="loading",
            bundle_path=str(path),
            started_at=time.time(),
            model_version=current.model_version if current else None,
        )
        self._status = started
        self._idle.clear()
        try:
            self.threads.start(lambda: self._worker(path, keep), "micrec-load")
        except BaseException:
            self._idle.set()
            self._lock.release()
            raise
        # The status as of the start: the worker may already have finished (fast failure).
        return started

    def _worker(self, path: Path, keep: Callable[[], bool] | None) -> None:
        state = self._load(path, keep)
        if state is not None and self.settings.warm_encoders:
            # After the swap and after releasing the reload lock: readiness and reload
            # status never wait for it.
            self._warm_encoders(state)

    def _load(self, path: Path, keep: Callable[[], bool] | None) -> ModelState | None:
        """Build and publish a new state; on failure keep the old one and report why."""
        try:
            try:
                state = self._build(path)
            except Exception as err:  # a failed load must never take the old model down
                self._failed(err)
                return None
            if keep is not None and self.served.state is not None and not keep():
                log.info("model load of %s superseded: dropped, the old model serves", path)
                self.metrics.reloads.labels("superseded").inc()
                self._status = self._status.model_copy(
                    update={"status": "superseded", "finished_at": time.time()}
                )
                return None
            old = self.feed.publish(state)
            # The model's ~200k long-lived objects out of the cyclic GC's sight: a full
            # collection over them stalled every request for ~0.7 s at 1e5 items per domain
            # (docs/results/serve-steps/hotpath.md). Refcounting still frees them.
            gc.freeze()
            self._ready.set()
            if old is not None:
                log.info("model %s replaced by %s", old.model_version, state.model_version)
            self.metrics.reloads.labels("succeeded").inc()
            self._status = self._status.model_copy(
                update={"status": "succeeded", "error": None, "finished_at": time.time()}
            )
            log.info(
                "serving model %s from %s (%s)",
                state.model_version,
                path,
                ", ".join(f"{d}: {len(i)} items/{i.kind}" for d, i in state.indexes.items()),
            )
            return state
        finally:
            self._load_done.set()
            self._idle.set()
            self._lock.release()

    def _failed(self, err: Exception) -> None:
        from model.bundle import BundleError

        if isinstance(err, BundleError | FileNotFoundError | NotADirectoryError):
            msg = str(err)
            log.error("model load failed: %s", msg)
        else:
            msg = f"{type(err).__name__}: {err}"
            log.exception("model load failed unexpectedly")
        self.metrics.reloads.labels("failed").inc()
        self._status = self._status.model_copy(
            update={"status": "failed", "error": msg, "finished_at": time.time()}
        )

    def build(self, path: Path) -> ModelState:
        """A state for ``path``, caught up with the stored items, not served (a canary's:
        app/lifecycle/canary_follow.py)."""
        return self._build(path)

    def adopt(self, state: ModelState) -> bool:
        """Serve ``state`` (built by :meth:`build`, followed since) as the main one, without
        loading it again; False when a load runs (try again later)."""
        if not self._lock.acquire(blocking=False):
            return False
        try:
            old = self.feed.publish(state)
            self._ready.set()
            self.metrics.reloads.labels("succeeded").inc()
            self._status = ReloadStatus(
                status="succeeded",
                bundle_path=str(state.bundle_path),
                started_at=time.time(),
                finished_at=time.time(),
            )
            log.info(
                "model %s replaced by %s (the canary's state)",
                old.model_version if old else None,
                state.model_version,
            )
            return True
        finally:
            self._lock.release()

    def _build(self, path: Path) -> ModelState:
        """Load the engine, build the indexes and replay registered items (no lock held)."""
        state = build_state(self.engine_factory(path), path, self.settings)
        self.feed.replay(state)
        self.sync.refresh_popularity(state, force=True)
        return state

    def _warm_encoders(self, state: ModelState) -> None:
        """Load the content encoders now (engines load them lazily), so the first item
        registration does not pay for it. Two passes: the second call of a torch model is
        still several times slower than steady state."""
        from PIL import Image

        image = Image.new("RGB", (64, 64), "gray")
        try:
            for _ in range(2):
                if self.threads.stopping.is_set():
                    return
                state.engine.encode_content(text="warm-up", image=image)
        except Exception as err:  # registration will report the real error to its caller
            log.warning("content encoders could not be loaded: %s", err)
