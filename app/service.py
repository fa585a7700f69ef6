"""Business logic of the recommendation service, free of HTTP (routers are thin wrappers).

Concurrency model
-----------------
* ``ModelState`` bundles everything that belongs to one loaded model: the engine, one
  ``DomainIndex`` per domain, catalogue lookups and the registered items replayed into it.
  The service holds one reference, ``service.state``; a request reads it *once* and uses
  that object to the end, so a reload that swaps the reference never changes the model
  under a running request.
* Reads (recommend, similar, item lookups) take no lock: the engine's reads are
  thread-safe, ``DomainIndex`` serialises its own writes, and dict lookups are atomic.
* Writes that change a state (register/update/delete an item, replica sync, the final
  catch-up of a reload) hold ``_write_lock``: the engine wants a single writer, and the
  lock makes "read store change feed position, apply, swap" atomic with respect to writes,
  so no registration is lost by a reload that runs concurrently.
* Durability first: an item is written to the store before it becomes visible here, and a
  failed store write (``StoreUnavailable``) leaves memory untouched (503 + Retry-After).

Replicas follow each other through the store's item change feed (``item_changes``): a
background thread polls it every ``replica_sync_interval_s`` and applies other replicas'
registrations and deletions. Applying a change is idempotent, so a change this process
made itself, or that a reload already replayed, is harmless when seen again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from app.content import (
    CategoryIndex,
    category_matches,
    decode_base64_image,
    item_text,
    join_categories,
    open_image,
    split_categories,
)
from app.errors import Conflict, InvalidInput, NotFound, NotReady, PayloadTooLarge, Unavailable
from app.idempotency import not_saved, outcome_unknown, same_item
from app.index import DomainIndex
from app.metrics import Metrics
from app.schemas import (
    HistoryReport,
    IndexCalibrationInfo,
    IndexInfo,
    InteractionIn,
    InteractionsResponse,
    ItemOut,
    ModelInfo,
    RecommendedItem,
    RecommendResponse,
    RejectedRow,
    ReloadStatus,
    SimilarResponse,
)
from app.settings import Settings
from app.store.base import Interaction, Store, StoredItem, StoreUnavailable
from model.inference import InferenceEngine

log = logging.getLogger("micrec.service")

FILTER_EXACT_MAX_ITEMS = 20_000
"""A category filter matching at most this many items of a domain scores them exactly
(~2 ms per 10k items); broader filters search the index and keep the matches."""

EngineFactory = Callable[[Path], InferenceEngine]
"""Loads an engine from a bundle directory (raises e.g. ``model.bundle.BundleError``)."""

FEED_PAGE = 1000

LOAD_FAILED = "the model load failed; an admin sees why in GET /v1/admin/reload"
"""What unauthenticated answers say about a failed load (its error names paths)."""


def build_domain_index(engine: InferenceEngine, domain: str, settings: Settings) -> DomainIndex:
    """The serving index of ``domain``'s bundle catalogue, as ``settings`` configure it.

    An IVF index (catalogues above ``exact_index_max_items``) has its nprobe calibrated on
    up to ``ivf_calibration_queries`` real bundle users of the domain.
    """
    cat = engine.catalogue(domain)
    index = DomainIndex(
        domain,
        engine.dim,
        exact_max_items=settings.exact_index_max_items,
        ivf_nlist=settings.ivf_nlist,
        ivf_nprobe=settings.ivf_nprobe,
        ivf_target_recall=settings.ivf_target_recall,
        threads=settings.faiss_threads,
    )
    queries = None
    if len(cat.item_ids) > settings.exact_index_max_items and settings.ivf_calibration_queries:
        queries = engine.sample_user_vectors(domain, settings.ivf_calibration_queries)
    index.build(
        list(cat.item_ids), np.ascontiguousarray(cat.vectors, dtype=np.float32), queries=queries
    )
    c = index.calibration
    if c is not None and c.exact_instead:
        log.warning(
            "%s: IVF needs nprobe %d of %d lists for recall@%d %.2f: serving exact search",
            domain,
            c.nprobe,
            c.nlist,
            c.k,
            c.target_recall,
        )
    elif c is not None:
        log.info(
            "%s: IVF nprobe %d reaches recall@%d %.3f (target %.2f) on %d bundle users (%.1f s)",
            domain,
            c.nprobe,
            c.k,
            c.recall,
            c.target_recall,
            c.queries,
            c.seconds,
        )
    elif index.kind == "ivf":
        log.warning(
            "%s: IVF index not calibrated (no bundle users); nprobe %s", domain, index.nprobe
        )
    return index


def load_engine(path: Path, *, device: str = "cpu") -> InferenceEngine:
    """The production engine factory: verify and load a bundle, never unpickling."""
    from model.bundle import load_bundle

    return InferenceEngine.from_bundle(load_bundle(path, device=device), device=device)


@dataclass(frozen=True)
class ItemMeta:
    """A registered (API) item as this process serves it."""

    item_id: str
    domain: str
    title: str
    categories: str
    description: str
    modalities: tuple[str, ...]
    created_at: float
    updated_at: float

    def to_out(self) -> ItemOut:
        return ItemOut(
            item_id=self.item_id,
            domain=self.domain,
            title=self.title,
            categories=split_categories(self.categories),
            description=self.description,
            origin="api",
            modalities=list(self.modalities),
            created_at=self.created_at,
            updated_at=self.updated_at,
        )


@dataclass
class ModelState:
    """One loaded model and everything derived from it; swapped whole on reload.

    Bundle-derived fields never change. ``registered``/``applied_seq`` and the indexes
    change only under the service's write lock.
    """

    engine: InferenceEngine
    bundle_path: Path
    loaded_at: float
    indexes: dict[str, DomainIndex]
    bundle_pos: dict[str, tuple[str, int]]
    """bundle item id -> (domain, row in the domain catalogue)."""
    bundle_categories: dict[str, list[str]]
    bundle_titles: dict[str, list[str]]
    bundle_popularity: dict[str, np.ndarray]
    registered: dict[str, ItemMeta] = field(default_factory=dict)
    applied_seq: dict[str, int] = field(default_factory=dict)
    """item id -> change-feed seq last applied here (skip older/equal feed entries)."""
    replayed: bool = False
    """False while registered items could not be replayed (store down at load)."""
    feed_seq: int = 0
    """Change-feed position this state has applied everything up to."""
    registered_version: int = 0
    """Bumped on every change to ``registered`` (invalidates the caches below)."""
    bundle_category_index: dict[str, CategoryIndex] = field(default_factory=dict)
    """domain -> its bundle items by category prefix."""
    popular_cache: dict[str, Any] = field(default_factory=dict)
    latest_cache: dict[str, tuple[int, list[tuple[str, float]]]] = field(default_factory=dict)

    @property
    def model_version(self) -> str:
        return self.engine.model_version

    @property
    def domains(self) -> list[str]:
        return list(self.engine.domains)

    def registered_count(self, domain: str | None = None) -> int:
        if domain is None:
            return len(self.registered)
        return sum(1 for m in list(self.registered.values()) if m.domain == domain)

    def is_bundle_item(self, item_id: str) -> bool:
        return item_id in self.bundle_pos

    def item_domain(self, item_id: str) -> str | None:
        pos = self.bundle_pos.get(item_id)
        if pos is not None:
            return pos[0]
        meta = self.registered.get(item_id)
        return meta.domain if meta else None

    def categories_of(self, item_id: str) -> str:
        pos = self.bundle_pos.get(item_id)
        if pos is not None:
            return self.bundle_categories[pos[0]][pos[1]]
        meta = self.registered.get(item_id)
        return meta.categories if meta else ""

    def category_candidates(self, domain: str, prefix: str) -> list[str] | None:
        """Ids of ``domain`` (bundle and registered) whose categories match ``prefix``, or
        None when more than FILTER_EXACT_MAX_ITEMS might (a search then finds them)."""
        rows = self.bundle_category_index[domain].rows(prefix, at_most=FILTER_EXACT_MAX_ITEMS)
        if rows is None:
            return None
        ids = self.engine.catalogue(domain).item_ids
        out = [ids[row] for row in rows.tolist()]
        out += [
            m.item_id
            for m in list(self.registered.values())
            if m.domain == domain and category_matches(m.categories, prefix)
        ]
        return out if len(out) <= FILTER_EXACT_MAX_ITEMS else None

    def check_domain(self, domain: str) -> None:
        if domain not in self.indexes:
            raise InvalidInput(
                f"unknown domain {domain!r}; valid domains: {', '.join(self.domains)}"
            )


class PopularityBook:
    """API-posted interaction counts per domain (the store is the source of truth).

    Local writes are counted immediately; ``replace`` installs the store's counts (which
    include other replicas'). Rankings merge the bundle's training popularity with these
    counts and are cached per (state, domain) until the counts change.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, dict[str, int]] = {}
        self._version = 0

    def add(self, increments: dict[tuple[str, str], int]) -> None:
        """Count the store's increments ((domain, item) -> new users) of a local write."""
        with self._lock:
            for (domain, item_id), n in increments.items():
                dom = self._counts.setdefault(domain, {})
                dom[item_id] = dom.get(item_id, 0) + n
            self._version += 1

    def replace(self, domain: str, counts: dict[str, int]) -> None:
        with self._lock:
            if self._counts.get(domain) != counts:
                self._counts[domain] = dict(counts)
                self._version += 1

    def count(self, domain: str, item_id: str) -> int:
        return self._counts.get(domain, {}).get(item_id, 0)

    def score(self, state: ModelState, domain: str, item_id: str) -> float:
        """One item's popularity as :meth:`ranking` scores it (bundle + API counts)."""
        pos = state.bundle_pos.get(item_id)
        base = (
            0 if pos is None or pos[0] != domain else int(state.bundle_popularity[domain][pos[1]])
        )
        with self._lock:
            return float(base + self.count(domain, item_id))

    def ranking(self, state: ModelState, domain: str) -> tuple[list[str], np.ndarray]:
        """(ids, scores) of items with popularity > 0, most popular first.

        Cached on the state (so a reload never sees another model's ranking) until the
        counts or the state's registered items change.
        """
        key = (self._version, state.registered_version)
        cached = state.popular_cache.get(domain)
        if cached is not None and cached[0] == key:
            return cached[1], cached[2]
        with self._lock:
            api = dict(self._counts.get(domain, {}))
        scores = state.bundle_popularity[domain].astype(np.float64).copy()
        ids = list(state.engine.catalogue(domain).item_ids)
        extra_ids: list[str] = []
        extra_scores: list[float] = []
        for iid, c in api.items():
            pos = state.bundle_pos.get(iid)
            if pos is not None and pos[0] == domain:
                scores[pos[1]] += c
            elif iid in state.registered:
                extra_ids.append(iid)
                extra_scores.append(float(c))
        all_ids = ids + extra_ids
        all_scores = np.concatenate([scores, np.asarray(extra_scores, dtype=np.float64)])
        order = np.argsort(-all_scores, kind="stable")
        order = order[all_scores[order] > 0]
        ranked_ids = [all_ids[i] for i in order]
        ranked_scores = all_scores[order]
        state.popular_cache[domain] = (key, ranked_ids, ranked_scores)
        return ranked_ids, ranked_scores


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
        self.popularity = PopularityBook()
        self._state: ModelState | None = None
        self._write_lock = threading.RLock()
        self._reload_lock = threading.Lock()
        self._reload = ReloadStatus(status="idle")
        self._ready = threading.Event()
        self._load_done = threading.Event()
        self._stop = threading.Event()
        self._store_error: str | None = None
        self._threads: list[threading.Thread] = []
        self._last_popularity_refresh = 0.0

    # --- lifecycle --------------------------------------------------------------------
    @property
    def state(self) -> ModelState | None:
        return self._state

    def require_state(self) -> ModelState:
        state = self._state
        if state is None:
            if self._reload.status == "failed":
                raise NotReady(f"no model loaded: {LOAD_FAILED}")
            raise NotReady("the model is still loading; retry shortly")
        return state

    def start(self) -> None:
        """Begin the initial load (background) and the replica-sync loop."""
        self.start_reload(None)
        if self.settings.replica_sync_interval_s > 0 or self.settings.popularity_refresh_s > 0:
            t = threading.Thread(target=self._sync_loop, name="micrec-sync", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self, timeout: float = 60.0) -> None:
        """Stop the background threads (sync loop, a running load or warm-up)."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        for t in list(self._threads):
            t.join(timeout=max(0.0, deadline - time.monotonic()))

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Block until a model serves (True) or the initial load ended without one."""
        self._load_done.wait(timeout)
        return self._ready.is_set()

    def wait_reload(self, timeout: float | None = None) -> ReloadStatus:
        """Block until no reload is running; returns the final status."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._reload.status == "loading":
            if deadline is not None and time.monotonic() > deadline:
                break
            time.sleep(0.01)
        return self.reload_status()

    # --- store bookkeeping ------------------------------------------------------------
    def _store_failed(self, operation: str, err: Exception) -> None:
        self.metrics.store_errors.labels(operation).inc()
        if self._store_error is None:
            log.warning("state store unavailable (%s): %s", operation, err)
        self._store_error = f"{operation}: {err}"

    def _store_ok(self) -> None:
        if self._store_error is not None:
            log.info("state store available again")
        self._store_error = None

    def _write_unavailable(
        self, operation: str, err: Exception, check: str = "", *, attempted: bool = True
    ) -> Unavailable:
        """503 for a failed store call: ``attempted`` = a write was sent (outcome unknown)."""
        self._store_failed(operation, err)
        message = outcome_unknown(operation, check) if attempted else not_saved(operation)
        return Unavailable(message, retry_after_s=self.settings.store_retry_after_s)

    # --- loading ----------------------------------------------------------------------
    def reload_status(self) -> ReloadStatus:
        state = self._state
        return self._reload.model_copy(
            update={"model_version": state.model_version if state else None}
        )

    def start_reload(self, bundle_path: str | Path | None) -> ReloadStatus:
        """Load ``bundle_path`` (default: the current one) in the background; 409 if a load
        is already running. The old model keeps serving until the new one is complete."""
        if not self._reload_lock.acquire(blocking=False):
            raise Conflict("a model reload is already running; see GET /v1/admin/reload")
        current = self._state
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
        self._reload = started
        t = threading.Thread(
            target=self._reload_worker, args=(path,), name="micrec-load", daemon=True
        )
        try:
            t.start()
        except BaseException:
            self._reload_lock.release()
            raise
        # stop() joins it: a daemon thread killed inside torch/FAISS at interpreter exit
        # aborts the process ("terminate called without an active exception").
        self._threads = [th for th in self._threads if th.is_alive()] + [t]
        # The status as of the start: the worker may already have finished (fast failure).
        return started

    def _reload_worker(self, path: Path) -> None:
        state = self._load(path)
        if state is not None and self.settings.warm_encoders:
            # After the swap and after releasing the reload lock: readiness and reload
            # status never wait for it.
            self._warm_encoders(state)

    def _load(self, path: Path) -> ModelState | None:
        """Build and publish a new state; on failure keep the old one and report why."""
        try:
            try:
                state = self._build_state(path)
            except Exception as err:  # a failed load must never take the old model down
                from model.bundle import BundleError

                if isinstance(err, BundleError | FileNotFoundError | NotADirectoryError):
                    msg = str(err)
                    log.error("model load failed: %s", msg)
                else:
                    msg = f"{type(err).__name__}: {err}"
                    log.exception("model load failed unexpectedly")
                self.metrics.reloads.labels("failed").inc()
                self._reload = self._reload.model_copy(
                    update={"status": "failed", "error": msg, "finished_at": time.time()}
                )
                return None
            self._swap(state)
            self.metrics.reloads.labels("succeeded").inc()
            self._reload = self._reload.model_copy(
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
            self._reload_lock.release()

    def _warm_encoders(self, state: ModelState) -> None:
        """Load the content encoders now (engines load them lazily), so the first item
        registration does not pay for it. Two passes: the second call of a torch model is
        still several times slower than steady state."""
        from PIL import Image

        image = Image.new("RGB", (64, 64), "gray")
        try:
            for _ in range(2):
                if self._stop.is_set():
                    return
                state.engine.encode_content(text="warm-up", image=image)
        except Exception as err:  # registration will report the real error to its caller
            log.warning("content encoders could not be loaded: %s", err)

    def _build_state(self, path: Path) -> ModelState:
        """Load the engine, build the indexes and replay registered items (no lock held)."""
        s = self.settings
        engine = self.engine_factory(path)
        indexes: dict[str, DomainIndex] = {}
        bundle_pos: dict[str, tuple[str, int]] = {}
        cats: dict[str, list[str]] = {}
        titles: dict[str, list[str]] = {}
        pops: dict[str, np.ndarray] = {}
        for d in engine.domains:
            cat = engine.catalogue(d)
            indexes[d] = build_domain_index(engine, d, s)
            bundle_pos.update({iid: (d, k) for k, iid in enumerate(cat.item_ids)})
            cats[d] = list(cat.categories)
            titles[d] = list(cat.titles)
            pops[d] = np.asarray(cat.popularity, dtype=np.int64)
        state = ModelState(
            engine=engine,
            bundle_path=path,
            loaded_at=time.time(),
            indexes=indexes,
            bundle_pos=bundle_pos,
            bundle_categories=cats,
            bundle_titles=titles,
            bundle_popularity=pops,
            bundle_category_index={d: CategoryIndex(c) for d, c in cats.items()},
        )
        self._replay(state)
        self._refresh_popularity(state, force=True)
        return state

    def _drain_feed(self, after: int) -> int:
        """Newest change-feed seq (>= ``after``)."""
        seq = after
        while True:
            changes = self.store.item_changes(seq, FEED_PAGE)
            if not changes:
                return seq
            seq = max(seq, changes[-1].seq)
            if len(changes) < FEED_PAGE:
                return seq

    def _replay(self, state: ModelState) -> None:
        """Apply every stored item to ``state`` and set its feed position.

        The feed position is read *before* listing, so a change made while listing is
        seen again later (sync loop or a reload's catch-up) and re-applied idempotently.
        """
        try:
            seq = self._drain_feed(0)
            items = self.store.list_items()
        except StoreUnavailable as err:
            self._store_failed("replay registered items", err)
            return
        self._store_ok()
        with self._write_lock:
            for item in items:
                self._apply_upsert(state, item, seq)
            state.feed_seq = max(state.feed_seq, seq)
            state.replayed = True
        if items:
            log.info("replayed %d registered items into %s", len(items), state.model_version)

    def _swap(self, new: ModelState) -> None:
        """Catch the new state up with writes made during its build, then publish it."""
        with self._write_lock:
            old = self._state
            if new.replayed:
                # Writes made while the new state was built are durable in the store and in
                # the feed after new.feed_seq; holding the write lock, nothing new can
                # arrive between this catch-up and the swap.
                try:
                    self._apply_changes(new, self._read_changes(new.feed_seq))
                except StoreUnavailable as err:
                    self._store_failed("item change feed", err)
            self._state = new
            self._ready.set()
        if old is not None:
            log.info("model %s replaced by %s", old.model_version, new.model_version)

    # --- item state changes (caller holds _write_lock) ---------------------------------
    def _apply_upsert(self, state: ModelState, item: StoredItem, seq: int) -> ItemMeta | None:
        if state.applied_seq.get(item.item_id, -1) > seq:
            return state.registered.get(item.item_id)
        if item.domain not in state.indexes:
            log.warning(
                "registered item %r is in domain %r, which model %s does not serve; skipped",
                item.item_id,
                item.domain,
                state.model_version,
            )
            return None
        if state.is_bundle_item(item.item_id):
            log.warning("registered item %r shadows a bundle item; skipped", item.item_id)
            return None
        previous = state.registered.get(item.item_id)
        if previous is not None and previous.domain != item.domain:
            state.indexes[previous.domain].remove([item.item_id])
        state.engine.remove_item(item.item_id)
        vector = state.engine.add_item(item.item_id, item.domain, item.content)
        state.indexes[item.domain].upsert(
            [item.item_id], np.asarray(vector, dtype=np.float32).reshape(1, -1)
        )
        meta = ItemMeta(
            item_id=item.item_id,
            domain=item.domain,
            title=item.title,
            categories=item.categories,
            description=item.description,
            modalities=tuple(sorted(item.content)),
            created_at=item.created_at,
            updated_at=item.updated_at,
        )
        state.registered[item.item_id] = meta
        state.applied_seq[item.item_id] = seq
        state.registered_version += 1
        return meta

    def _apply_delete(self, state: ModelState, item_id: str, seq: int) -> bool:
        if state.applied_seq.get(item_id, -1) > seq:
            return False
        meta = state.registered.pop(item_id, None)
        state.applied_seq[item_id] = seq
        if meta is None:
            return False
        state.indexes[meta.domain].remove([item_id])
        state.engine.remove_item(item_id)
        state.registered_version += 1
        return True

    def _read_changes(self, after: int) -> list[tuple[int, str, StoredItem | None]]:
        """(seq, item_id, item or None when deleted) for feed entries after ``after``."""
        out: list[tuple[int, str, StoredItem | None]] = []
        seq = after
        while True:
            changes = self.store.item_changes(seq, FEED_PAGE)
            for ch in changes:
                out.append(
                    (ch.seq, ch.item_id, None if ch.deleted else self.store.get_item(ch.item_id))
                )
            if len(changes) < FEED_PAGE:
                return out
            seq = changes[-1].seq

    def _apply_changes(
        self, state: ModelState, changes: list[tuple[int, str, StoredItem | None]]
    ) -> None:
        for seq, item_id, item in changes:
            if item is None:
                self._apply_delete(state, item_id, seq)
            else:
                self._apply_upsert(state, item, seq)
            state.feed_seq = max(state.feed_seq, seq)

    # --- replica sync -----------------------------------------------------------------
    def _sync_loop(self) -> None:
        interval = self.settings.replica_sync_interval_s or self.settings.popularity_refresh_s
        follow = self.settings.replica_sync_interval_s > 0
        while not self._stop.wait(interval):
            try:
                self.sync_once(follow_feed=follow)
            except Exception:  # the loop must survive anything; the next tick retries
                log.exception("replica sync failed")

    def sync_once(self, *, follow_feed: bool = True) -> None:
        """Apply other replicas' item changes and refresh popularity (one tick)."""
        state = self._state
        if state is None:
            return
        if not state.replayed:
            self._replay(state)
        elif follow_feed:
            try:
                # Store reads happen outside the write lock (a slow store must not block
                # this process's own writes for longer than needed).
                changes = self._read_changes(state.feed_seq)
            except StoreUnavailable as err:
                self._store_failed("item change feed", err)
            else:
                self._store_ok()
                if changes:
                    with self._write_lock:
                        # A reload may have swapped meanwhile; the new state caught up by
                        # itself, so these changes only concern the state they were read for.
                        self._apply_changes(state, changes)
        self._refresh_popularity(state)

    def _catch_up(self) -> None:
        """Apply the item change feed now, for a request naming an id this replica does not
        know: it may have been registered on another replica moments ago, and a client that
        registers an item and then uses it must not depend on which replica answers. Only
        requests with unknown ids pay this one store read; without replica following
        (``replica_sync_interval_s`` = 0) there is nothing to catch up with."""
        if self.settings.replica_sync_interval_s > 0:
            self.sync_once()

    def _refresh_popularity(self, state: ModelState, *, force: bool = False) -> None:
        every = self.settings.popularity_refresh_s
        now = time.monotonic()
        if not force and (every <= 0 or now - self._last_popularity_refresh < every):
            return
        self._last_popularity_refresh = now
        try:
            for d in state.domains:
                self.popularity.replace(d, self.store.popularity(d))
        except StoreUnavailable as err:
            self._store_failed("popularity", err)

    # --- recommend --------------------------------------------------------------------
    def _check_n(self, n: int | None) -> int:
        n = self.settings.default_n if n is None else n
        if n < 1 or n > self.settings.max_n:
            raise InvalidInput(f"n must be between 1 and max_n={self.settings.max_n}, got {n}")
        return n

    def _check_list(self, name: str, values: Sequence[str]) -> None:
        limit = self.settings.max_history
        if len(values) > limit:
            raise PayloadTooLarge(f"{name} has {len(values)} ids; the limit is max_history={limit}")

    def recommend(
        self,
        *,
        domain: str,
        user_id: str | None = None,
        history: Sequence[str] = (),
        n: int | None = None,
        exclude_seen: bool = True,
        exclude: Sequence[str] = (),
        category: str | None = None,
    ) -> RecommendResponse:
        """Top-``n`` items of ``domain`` for a user.

        History = the bundle's history of ``user_id`` + its stored history + ``history``
        (inline ids, any domain). With history the engine embeds the user ("inductive" or
        "cross_domain") and the domain index ranks; without, or when the model yields
        fewer than ``n`` items, the configured fallback chain fills the list.
        """
        state = self.require_state()
        state.check_domain(domain)
        n = self._check_n(n)
        self._check_list("history", history)
        self._check_list("exclude", exclude)
        warnings: list[str] = []

        by_domain, report = self._collect_history(state, user_id, history, warnings)
        embedding = state.engine.embed_user(domain, by_domain)
        report.items_used = embedding.n_history

        excluded = set(exclude)
        if exclude_seen:
            excluded.update(i for ids in by_domain.values() for i in ids)
        prefix = category.strip().lower() if category else None
        # A selective filter's items, looked up once for the model and the fallback chain.
        matching = None if prefix is None else state.category_candidates(domain, prefix)

        items: list[RecommendedItem] = []
        if embedding.method != "none":
            method = embedding.method
            items = self._model_candidates(
                state, domain, embedding.vector, n, excluded, prefix, matching
            )
        else:
            method = "fallback"
        if len(items) < n:
            taken = excluded | {it.item_id for it in items}
            before = len(items)
            items += self._fallback(state, domain, n - len(items), taken, prefix, matching)
            if len(items) > before:
                self.metrics.fallbacks.labels(domain).inc()
        if not items:
            warnings.append("no items matched (empty index, filters or exclusions)")

        m = self.metrics
        m.recommendations.labels(domain, method).inc()
        for source, count in Counter(it.source for it in items).items():
            m.items_served.labels(domain, source).inc(count)
        return RecommendResponse(
            domain=domain,
            n=n,
            model_version=state.model_version,
            user_embedding=method,  # type: ignore[arg-type]
            items=items,
            history=report,
            warnings=warnings,
        )

    def _collect_history(
        self,
        state: ModelState,
        user_id: str | None,
        inline: Sequence[str],
        warnings: list[str],
    ) -> tuple[dict[str, list[str]], HistoryReport]:
        """domain -> item ids: bundle history + stored history + inline history."""
        by_domain: dict[str, list[str]] = {}
        stored = "not_requested"
        known = False
        if user_id is not None:
            for d, ids in state.engine.bundle_history(user_id).items():
                by_domain.setdefault(d, []).extend(ids)
            try:
                history = self.store.get_history(user_id)
                stored = "ok"
                self._store_ok()
            except StoreUnavailable as err:
                self._store_failed("read history", err)
                history = {}
                stored = "unavailable"
                warnings.append(
                    "history store unavailable: using the bundle's and the inline history only"
                )
            for d, ids in history.items():
                by_domain.setdefault(d, []).extend(ids)
            known = bool(by_domain)
        unknown: list[str] = []
        if any(state.item_domain(iid) is None for iid in inline):
            self._catch_up()
        for iid in inline:
            item_domain = state.item_domain(iid)
            if item_domain is None:
                unknown.append(iid)
            else:
                by_domain.setdefault(item_domain, []).append(iid)
        if unknown:
            warnings.append(f"{len(unknown)} history ids are not in the catalogue and were ignored")
        report = HistoryReport(
            stored=stored,  # type: ignore[arg-type]
            known_user=known,
            items_used=0,
            unknown_ids=unknown[:20],
        )
        return by_domain, report

    def _model_candidates(
        self,
        state: ModelState,
        domain: str,
        vector: np.ndarray,
        n: int,
        excluded: set[str],
        prefix: str | None,
        matching: list[str] | None,
    ) -> list[RecommendedItem]:
        """Top ``n`` by the model; ``matching`` = the filter's items when it is selective
        (:meth:`ModelState.category_candidates`)."""
        index = state.indexes[domain]
        size = len(index)
        if size == 0:
            return []
        query = np.asarray(vector, dtype=np.float32).reshape(1, -1)
        if matching is not None:
            # A selective filter: score its few items exactly (a search would have to
            # fetch most of the index to find them; 0.5 s at 1e5 items before this).
            scored = index.score(query[0], [i for i in matching if i not in excluded])
            scored.sort(key=lambda hit: hit[1], reverse=True)
            return [
                RecommendedItem(item_id=iid, score=score, source="model")
                for iid, score in scored[:n]
            ]
        # Start with n (+ exclusions the index filters itself); a category filter may
        # need more, so widen 4x until enough match or the whole index was searched.
        k = min(size, n if prefix is None else 4 * n)
        while True:
            hits = index.search(query, k, exclude=[excluded])[0]
            out = [
                RecommendedItem(item_id=iid, score=float(score), source="model")
                for iid, score in hits
                if iid not in excluded
                and (prefix is None or category_matches(state.categories_of(iid), prefix))
            ]
            if len(out) >= n or k >= size:
                return out[:n]
            k = min(size, 4 * k)

    def _fallback(
        self,
        state: ModelState,
        domain: str,
        n: int,
        taken: set[str],
        prefix: str | None,
        matching: list[str] | None,
    ) -> list[RecommendedItem]:
        """Fill up to ``n`` items from the configured fallback chain, in order."""
        out: list[RecommendedItem] = []
        index = state.indexes[domain]

        def usable(iid: str) -> bool:
            return (
                iid not in taken
                and iid in index
                and (prefix is None or category_matches(state.categories_of(iid), prefix))
            )

        for name in self.settings.fallback_chain:
            if len(out) >= n:
                break
            source: Iterable[tuple[str, float]]
            if name == "popular":
                if matching is None:
                    ids, scores = self.popularity.ranking(state, domain)
                    source = zip(ids, scores.tolist(), strict=True)
                else:  # a selective filter: rank its few items instead of scanning all
                    pops = [(i, self.popularity.score(state, domain, i)) for i in matching]
                    source = sorted((h for h in pops if h[1] > 0), key=lambda h: -h[1])
            else:
                source = self._latest(state, domain)
            for iid, score in source:
                if usable(iid):
                    out.append(RecommendedItem(item_id=iid, score=score, source=name))
                    taken.add(iid)
                    if len(out) >= n:
                        break
        return out

    @staticmethod
    def _latest(state: ModelState, domain: str) -> list[tuple[str, float]]:
        """Registered items of ``domain``, newest first (cached until items change)."""
        version = state.registered_version
        cached = state.latest_cache.get(domain)
        if cached is not None and cached[0] == version:
            return cached[1]
        metas = [m for m in list(state.registered.values()) if m.domain == domain]
        metas.sort(key=lambda m: (m.created_at, m.item_id), reverse=True)
        latest = [(m.item_id, m.created_at) for m in metas]
        state.latest_cache[domain] = (version, latest)
        return latest

    # --- similar ----------------------------------------------------------------------
    def similar(self, item_id: str, n: int | None = None) -> SimilarResponse:
        """Nearest items to ``item_id`` by item vector, within its domain."""
        state = self.require_state()
        n = self._check_n(n)
        if state.item_domain(item_id) is None:
            self._catch_up()
        domain = state.item_domain(item_id)
        if domain is None:
            raise NotFound(f"item {item_id!r} not found")
        index = state.indexes[domain]
        vector = index.vector(item_id)
        if vector is None:
            raise NotFound(f"item {item_id!r} is not in the {domain!r} index")
        k = min(len(index), n + 1)
        hits = index.search(vector.reshape(1, -1).astype(np.float32), k, exclude=[{item_id}])[0]
        items = [
            RecommendedItem(item_id=iid, score=float(s), source="model")
            for iid, s in hits
            if iid != item_id
        ][:n]
        return SimilarResponse(
            item_id=item_id, domain=domain, model_version=state.model_version, items=items
        )

    # --- items ------------------------------------------------------------------------
    def get_item(self, item_id: str) -> ItemOut:
        state = self.require_state()
        pos = state.bundle_pos.get(item_id)
        if pos is not None:
            d, k = pos
            return ItemOut(
                item_id=item_id,
                domain=d,
                title=state.bundle_titles[d][k],
                categories=split_categories(state.bundle_categories[d][k]),
                origin="bundle",
            )
        meta = state.registered.get(item_id)
        if meta is not None:
            return meta.to_out()
        raise NotFound(f"item {item_id!r} not found")

    def _content(
        self,
        state: ModelState,
        *,
        title: str,
        categories: str,
        description: str,
        image_base64: str | None,
        image_bytes: bytes | None,
    ) -> dict[str, np.ndarray]:
        s = self.settings
        text = item_text(title, categories, description)
        if len(text) > s.max_text_chars:
            raise InvalidInput(
                f"title + categories + description is {len(text)} characters; "
                f"the limit is max_text_chars={s.max_text_chars}"
            )
        if image_base64 is not None and image_bytes is not None:
            raise InvalidInput("send the image either as image_base64 or as a file, not both")
        if image_base64 is not None:
            image_bytes = decode_base64_image(image_base64, max_bytes=s.max_image_bytes)
        image = None
        if image_bytes is not None:
            image = open_image(
                image_bytes,
                max_bytes=s.max_image_bytes,
                max_pixels=s.max_image_pixels,
                max_aspect=s.max_image_aspect_ratio,
            )
        try:
            return state.engine.encode_content(text=text or None, image=image)
        except (ValueError, OverflowError, MemoryError) as err:
            raise InvalidInput(f"content cannot be encoded: {str(err)[:200]}") from None

    def register_item(
        self,
        *,
        item_id: str,
        domain: str,
        title: str = "",
        categories: Sequence[str] = (),
        description: str = "",
        image_base64: str | None = None,
        image_bytes: bytes | None = None,
        replace: bool = False,
    ) -> tuple[ItemOut, bool]:
        """Register (or with ``replace`` create-or-replace) a cold-start item.

        Order: validate -> encode -> durable store write -> engine + index, so a 201
        means the item survives a restart and is served by the next request.
        Returns (item, created).
        """
        state = self.require_state()
        state.check_domain(domain)
        if state.is_bundle_item(item_id):
            raise Conflict(f"item {item_id!r} is part of the model bundle and is read-only")
        earlier = None if replace else self._earlier(state, item_id)
        cats = join_categories(list(categories))
        fields = {"title": title, "categories": cats, "description": description}

        # Encoding is the slow part: do it outside the write lock.
        content = self._content(state, image_base64=image_base64, image_bytes=image_bytes, **fields)
        if earlier is not None:  # a retry of the same registration is answered, not refused
            if same_item(earlier, domain=domain, fields=fields, content=content):
                return self._item_out(state, earlier), False
            raise Conflict(f"item {item_id!r} already exists; use PUT to replace it")
        with self._write_lock:
            current = self.require_state()
            if current is not state:
                # A reload swapped the model while we encoded: encode for the new one.
                state = current
                state.check_domain(domain)
                content = self._content(
                    state, image_base64=image_base64, image_bytes=image_bytes, **fields
                )
            existing = state.registered.get(item_id)
            if not replace and existing is not None:
                raise Conflict(f"item {item_id!r} already exists; use PUT to replace it")
            now = time.time()
            stored = StoredItem(
                item_id=item_id,
                domain=domain,
                content=content,
                created_at=existing.created_at if existing else now,
                updated_at=now,
                **fields,
            )
            try:
                seq = self.store.put_item(stored)
            except StoreUnavailable as err:
                check = f"GET /v1/items/{item_id}"
                raise self._write_unavailable("item", err, check) from None
            self._store_ok()
            meta = self._apply_upsert(state, stored, seq)
        assert meta is not None  # domain checked above; bundle ids refused above
        return meta.to_out(), existing is None

    def _earlier(self, state: ModelState, item_id: str) -> StoredItem | None:
        """The stored item ``item_id`` (a POST for it is a retry or a conflict), or None."""
        try:
            # The store, not memory: another replica may have registered it moments ago.
            found = self.store.get_item(item_id)
        except StoreUnavailable as err:
            raise self._write_unavailable("item", err, attempted=False) from None
        if found is None and item_id in state.registered:  # store lost it: cannot compare
            raise Conflict(f"item {item_id!r} already exists; use PUT to replace it")
        return found

    @staticmethod
    def _item_out(state: ModelState, item: StoredItem) -> ItemOut:
        meta = state.registered.get(item.item_id)
        if meta is not None:
            return meta.to_out()
        return ItemOut(  # registered on another replica, not synced here yet
            item_id=item.item_id,
            domain=item.domain,
            title=item.title,
            categories=split_categories(item.categories),
            description=item.description,
            origin="api",
            modalities=sorted(item.content),
            created_at=item.created_at,
            updated_at=item.updated_at,
        )

    def update_item(self, item_id: str, **fields: Any) -> tuple[ItemOut, bool]:
        """PUT semantics: create or replace a registered item (bundle items: 409)."""
        return self.register_item(item_id=item_id, replace=True, **fields)

    def delete_item(self, item_id: str) -> None:
        state = self.require_state()
        if state.is_bundle_item(item_id):
            raise Conflict(f"item {item_id!r} is part of the model bundle and cannot be deleted")
        with self._write_lock:
            state = self.require_state()
            try:
                seq = self.store.delete_item(item_id)
            except StoreUnavailable as err:
                check = f"GET /v1/items/{item_id} (404 once deleted)"
                raise self._write_unavailable("delete", err, check) from None
            self._store_ok()
            if seq is None:
                if item_id in state.registered:  # store lost it: still drop it here
                    self._apply_delete(state, item_id, state.feed_seq)
                    return
                raise NotFound(f"item {item_id!r} not found")
            self._apply_delete(state, item_id, seq)

    # --- interactions -----------------------------------------------------------------
    def add_interactions(self, rows: Sequence[InteractionIn]) -> InteractionsResponse:
        """Append valid rows to user histories + popularity; reject the others per row."""
        if len(rows) > self.settings.max_batch:
            raise PayloadTooLarge(
                f"batch has {len(rows)} rows; the limit is max_batch={self.settings.max_batch}"
            )
        state = self.require_state()
        now = time.time()
        accepted: list[Interaction] = []
        rejected: list[RejectedRow] = []
        looked_up: dict[str, str | None] = {}
        for k, row in enumerate(rows):
            domain = state.item_domain(row.item_id)
            if domain is None:
                if row.item_id not in looked_up:
                    looked_up[row.item_id] = self._store_item_domain(row.item_id)
                domain = looked_up[row.item_id]
            if domain is None:
                rejected.append(RejectedRow(index=k, item_id=row.item_id, reason="unknown item_id"))
                continue
            if row.domain is not None and row.domain != domain:
                rejected.append(
                    RejectedRow(
                        index=k,
                        item_id=row.item_id,
                        reason=f"domain mismatch: item is in {domain!r}, not {row.domain!r}",
                    )
                )
                continue
            ts = row.timestamp if row.timestamp is not None else now
            accepted.append(Interaction(row.user_id, row.item_id, domain, ts))
        if accepted:
            try:
                increments = self.store.add_interactions(accepted, self.settings.history_cap)
            except StoreUnavailable as err:
                raise self._write_unavailable("interactions", err) from None
            self._store_ok()
            self.popularity.add(increments)
        return InteractionsResponse(accepted=len(accepted), rejected=rejected)

    def _store_item_domain(self, item_id: str) -> str | None:
        """Domain of an item another replica registered that we have not synced yet."""
        try:
            item = self.store.get_item(item_id)
        except StoreUnavailable as err:
            raise self._write_unavailable("interactions", err, attempted=False) from None
        return item.domain if item is not None else None

    # --- model / probes ---------------------------------------------------------------
    def model_info(self) -> ModelInfo:
        state = self.require_state()
        return ModelInfo(
            model_version=state.model_version,
            loaded_at=state.loaded_at,
            dim=state.engine.dim,
            domains=state.domains,
            indexes={
                d: IndexInfo(
                    kind=index.kind,
                    size=len(index),
                    bundle_items=len(state.bundle_titles[d]),
                    registered_items=state.registered_count(d),
                    nprobe=index.nprobe,
                    calibration=None
                    if index.calibration is None
                    else IndexCalibrationInfo(
                        target_recall=index.calibration.target_recall,
                        recall=index.calibration.recall,
                        k=index.calibration.k,
                        queries=index.calibration.queries,
                        exact_instead=index.calibration.exact_instead,
                    ),
                )
                for d, index in state.indexes.items()
            },
            encoders=dict(state.engine.encoders_info),
            registered_items=state.registered_count(),
        )

    def store_status(self) -> tuple[bool, str | None]:
        """(ok, detail): pings the store now (readiness reports degradation)."""
        try:
            ok = bool(self.store.ping())
        except Exception as err:  # any failure to ping is "not ok", never a 500
            ok, detail = False, f"{type(err).__name__}: {err}"
            return ok, detail
        if ok:
            self._store_ok()
            return True, None
        return False, self._store_error or "store did not answer the ping"

    def degraded(self) -> list[str]:
        out = []
        state = self._state
        if state is not None and not state.replayed:
            out.append("registered items not replayed yet (store unavailable at load)")
        if self._reload.status == "failed" and state is not None:
            out.append(f"last reload failed ({LOAD_FAILED})")
        return out
