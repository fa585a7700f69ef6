"""Precomputed top-N per known user and domain (Gorse's design), kept valid across replicas.

An entry is the model's ``topn_cache_items`` best items for one (user, domain), with the
user's seen items left out, computed by the same search a live recommend runs. A later
recommend for that user and domain with ``exclude_seen`` (the default), no inline history
and no selective category filter is answered by filtering the entry (``exclude``, a broad
``category``) when at least ``n`` items remain; otherwise it is computed live. An entry is
only ever served for the state, history and registered items it is still exact for:

* **the user's history** - every recommend reads the user's stored history from the store
  anyway (app/store: one round trip with the erasure flag), and the entry remembers a
  fingerprint of the history it was computed from. An interaction posted on *any* replica
  changes the stored history, so the next read on every replica sees a different
  fingerprint and recomputes: no message between replicas is needed; the store is the
  shared truth.
* **erasure** - an erased user (the flag read with the history) is never answered from the
  cache and their entries are dropped; likewise when the store is unavailable.
* **items** - registrations and deletions are applied by the change feed (app/lifecycle/feed.py),
  which tells this cache (:meth:`TopNCache.item_changed`) with the registered-items
  version after the change. An entry remembers the version it is valid at; on a read, the
  changes since then are checked: a deleted or re-registered item in the list invalidates
  it, and so does a new item scoring at least the list's last score for this user (the
  entry keeps the user vector). Changes to other domains or below the list are harmless.
  A gap in the log (trimmed) invalidates.
* **the model** - entries belong to one state (generation); after a (re)load is published
  the most recently used (user, domain) pairs are recomputed for the new state in the
  background (:meth:`TopNCache.refresh_in_background`).

Exactness: the list is the first ``topn_cache_items`` of the same search a live request
runs for ``n``; for an exact (flat) index its first n are the live answer. An IVF index
fetches candidates by the equivalent L2 distance in float32, so with a different fetch size
two items whose inner products differ by less than float rounding could swap at the n-th
place (not observed; the tests use exact indexes).

Memory is bounded: at most ``topn_cache_entries`` entries, least recently used evicted;
an entry holds ``topn_cache_items`` id references, scores and one user vector (~2.5 KB
at 200 items).
"""

from __future__ import annotations

import bisect
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from app.lifecycle.engine import embedding_method
from app.lifecycle.state import ModelState
from app.serving.copurchase import rerank
from model.serving_types import UserEmbedding

log = logging.getLogger("micrec.service")

CHANGE_LOG_MAX = 4096
"""Item changes remembered per state; an entry older than the log is recomputed."""


def compute_entry(
    state: ModelState,
    domain: str,
    by_domain: Mapping[str, Sequence[str]],
    embedding: UserEmbedding,
    fingerprint: int,
    cache: TopNCache,
) -> Entry | None:
    """A user's entry: the same search a live recommend runs (seen items excluded), for
    ``cache.items`` items. None when the model has no answer (no usable history)."""
    method = embedding_method(embedding)
    index = state.indexes[domain]
    if method == "none" or len(index) == 0:
        return None
    version = state.registered.version  # before the search: conservative (see _still_exact)
    seen = {i for ids in by_domain.values() for i in ids}
    vector = np.asarray(embedding.vector, dtype=np.float32).reshape(-1)
    hits = index.search(vector.reshape(1, -1), cache.items, exclude=[seen])[0]
    full = len(hits) >= cache.items
    boost = embedding.boost
    if boost is not None:  # items in another domain: the co-purchase stage
        hits = rerank(index, vector, hits, boost, cache.items, lambda iid: iid not in seen)
    return Entry(
        generation=state.generation,
        fingerprint=fingerprint,
        version=version,
        ids=[iid for iid, _ in hits],
        scores=[float(s) for _, s in hits],
        vector=vector,
        method=method,
        items_used=embedding.n_history,
        known_user=bool(by_domain),
        full=full,
        boosted=frozenset(boost.item_ids) if boost is not None else frozenset(),
    )


def history_fingerprint(history: Mapping[str, Sequence[str]]) -> int:
    """Identifies a stored history (domain -> ids, oldest first)."""
    return hash(tuple((d, tuple(history[d])) for d in sorted(history)))


@dataclass
class Entry:
    generation: int
    fingerprint: int
    version: int
    """Registered-items version the list is known exact at (advanced on each valid read)."""
    ids: list[str]
    scores: list[float]
    vector: np.ndarray
    method: str
    items_used: int
    known_user: bool
    full: bool
    """The list has ``topn_cache_items`` items (else the index had fewer to give)."""
    boosted: frozenset[str] = frozenset()
    """Items whose score has a co-purchase boost (app/serving/copurchase.py): a change
    to one of them cannot be judged by its inner product alone."""
    id_set: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        self.id_set = frozenset(self.ids)

    def pick(
        self, n: int, exclude: set[str], keep: Callable[[str], bool] | None
    ) -> list[tuple[str, float]] | None:
        """The first ``n`` items not in ``exclude`` and passing ``keep``; None when fewer
        remain (the caller computes live)."""
        out: list[tuple[str, float]] = []
        for iid, score in zip(self.ids, self.scores, strict=True):
            if iid in exclude or (keep is not None and not keep(iid)):
                continue
            out.append((iid, score))
            if len(out) == n:
                return out
        return None


_Change = tuple[int, str, str, np.ndarray | None]
"""(registered-items version after the change, domain, item id, new vector or None)."""


class TopNCache:
    def __init__(self, items: int, entries: int) -> None:
        self.items = items
        self.max_entries = entries
        self.enabled = items > 0 and entries > 0
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple[str, str], Entry] = OrderedDict()
        self._logs: dict[int, list[_Change]] = {}
        self._refreshing: threading.Thread | None = None

    def __len__(self) -> int:
        return len(self._entries)

    # --- reads ------------------------------------------------------------------------
    def get(self, state: ModelState, user_id: str, domain: str, fingerprint: int) -> Entry | None:
        """The valid entry of (user, domain) for ``state`` and this history, else None."""
        key = (user_id, domain)
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if (
                entry.generation != state.generation
                or entry.fingerprint != fingerprint
                or not self._still_exact(entry, state, domain)
            ):
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return entry

    def _still_exact(self, entry: Entry, state: ModelState, domain: str) -> bool:
        current = state.registered.version
        if entry.version == current:
            return True
        changes = self._logs.get(state.generation, [])
        start = bisect.bisect_right(changes, entry.version, key=lambda c: c[0])
        seen = entry.version
        floor = entry.scores[-1] if entry.scores else -np.inf
        margin = 1e-5 * max(1.0, abs(floor))
        for version, d, item_id, vector in changes[start:]:
            if version > current:
                break
            if version > seen + 1:
                return False  # a change not logged (yet, or trimmed): cannot tell
            seen = version
            if d != domain:
                continue
            if item_id in entry.id_set or item_id in entry.boosted:
                return False
            if vector is not None and (
                not entry.full or float(vector @ entry.vector) >= floor - margin
            ):
                return False
        if seen != current:
            return False
        entry.version = current
        return True

    # --- writes -----------------------------------------------------------------------
    def put(self, user_id: str, domain: str, entry: Entry) -> None:
        with self._lock:
            self._entries[(user_id, domain)] = entry
            self._entries.move_to_end((user_id, domain))
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def drop_user(self, user_id: str) -> None:
        """Forget every entry of ``user_id`` (an erasure)."""
        with self._lock:
            for key in [k for k in self._entries if k[0] == user_id]:
                del self._entries[key]

    def item_changed(
        self, state: ModelState, domain: str, item_id: str, vector: np.ndarray | None
    ) -> None:
        """The change feed applied a registration (``vector``) or deletion (None) to
        ``state`` (called under the write lock, after the change)."""
        if not self.enabled:
            return
        v = None if vector is None else np.asarray(vector, dtype=np.float32).reshape(-1)
        with self._lock:
            log_ = self._logs.setdefault(state.generation, [])
            log_.append((state.registered.version, domain, item_id, v))
            if len(log_) > CHANGE_LOG_MAX:
                self._logs[state.generation] = log_[-CHANGE_LOG_MAX // 2 :]

    # --- reloads ----------------------------------------------------------------------
    def published(self, state: ModelState) -> list[tuple[str, str]]:
        """A new state serves: drop other states' entries and change logs; returns their
        (user, domain) keys, most recently used first (to recompute for ``state``)."""
        with self._lock:
            stale = [k for k, e in self._entries.items() if e.generation != state.generation]
            for k in stale:
                del self._entries[k]
            self._logs = {g: c for g, c in self._logs.items() if g == state.generation}
        stale.reverse()
        return stale

    def refresh_in_background(
        self,
        state: ModelState,
        keys: Iterable[tuple[str, str]],
        compute: Callable[[ModelState, str, str], None],
        is_current: Callable[[ModelState], bool],
    ) -> threading.Thread:
        """Recompute ``keys`` for ``state`` on a background thread, while ``is_current``
        (another state published, or the service stopping, ends it)."""

        def run() -> None:
            done = 0
            for user_id, domain in keys:
                if not is_current(state):
                    break
                try:
                    compute(state, user_id, domain)
                    done += 1
                except Exception:  # a store outage etc.: the request computes it live
                    log.debug("top-N refresh of %s/%s failed", user_id, domain, exc_info=True)
            log.info("top-N cache: %d entries refreshed for %s", done, state.model_version)

        thread = threading.Thread(target=run, name="micrec-topn", daemon=True)
        thread.start()
        self._refreshing = thread
        return thread

    def wait_refresh(self, timeout: float | None = None) -> None:
        """Block until a background refresh has finished (at stop: the thread must not be
        killed inside FAISS at interpreter exit)."""
        thread = self._refreshing
        if thread is not None:
            thread.join(timeout)
