"""Item popularity: the bundle's training popularity plus API-posted interactions.

The store is the source of truth for API counts (distinct users per item, across
replicas). :class:`PopularityBook` keeps them in memory: local writes are counted at
once (``local_write``), and ``refresh`` installs the store's counts, which include other
replicas', every ``popularity_refresh_s``. The "popular" fallback ranks by the sum.

A refresh never overlaps a local write: a store read taken while a write is half done
(its rows partly in the store, its increments not yet counted here) would count that
write twice once its increments are added (seen in a test: 383 instead of 200).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import overload

import numpy as np

from app.lifecycle.state import ModelState
from app.runtime.store_health import StoreHealth
from app.store.base import Store, StoreUnavailable


@dataclass(frozen=True)
class Ranking:
    """Items of one domain with popularity > 0, most popular first."""

    key: tuple[int, int, int]
    """(state generation, book version, registered-items version) it was computed at."""
    ids: Sequence[str]
    scores: np.ndarray


class RankedIds(Sequence[str]):
    """The ids of a ranking, read on demand: ``rows`` index the bundle catalogue's ids,
    then ``extra`` (registered items), so a ranking over millions of bundle items holds
    an int64 array rather than a list of strings (a fallback reads its first few)."""

    def __init__(self, rows: np.ndarray, bundle_ids: Sequence[str], extra: list[str]) -> None:
        self.rows, self.bundle_ids, self.extra = rows, bundle_ids, extra

    def __len__(self) -> int:
        return len(self.rows)

    @overload
    def __getitem__(self, k: int) -> str: ...
    @overload
    def __getitem__(self, k: slice) -> list[str]: ...
    def __getitem__(self, k: int | slice) -> str | list[str]:
        if isinstance(k, slice):
            return [self[j] for j in range(*k.indices(len(self)))]
        row = int(self.rows[k])
        n = len(self.bundle_ids)
        return self.bundle_ids[row] if row < n else self.extra[row - n]


class PopularityBook:
    """API-posted interaction counts per domain, and rankings merged with the bundle's.

    Rankings are cached per domain until the counts, the state's registered items or the
    state itself (a reload) change, so a reload never sees another model's ranking.
    """

    def __init__(self, refresh_every_s: float = 0.0) -> None:
        self.refresh_every_s = refresh_every_s
        self._lock = threading.Lock()
        self._counts: dict[str, dict[str, int]] = {}
        self._version = 0
        self._rankings: dict[str, Ranking] = {}
        self._last_refresh = 0.0
        self._writes_in_flight = 0
        self._writes_started = 0

    @contextmanager
    def local_write(self) -> Iterator[PopularityBook]:
        """Bracket a store write and the ``add`` of its increments, so that no refresh
        reads the store in between."""
        with self._lock:
            self._writes_in_flight += 1
            self._writes_started += 1
        try:
            yield self
        finally:
            with self._lock:
                self._writes_in_flight -= 1

    def add(self, increments: dict[tuple[str, str], int]) -> None:
        """Count the store's increments ((domain, item) -> new users) of a local write;
        negative for an erasure (a count reaching 0 is dropped, as the store drops it)."""
        with self._lock:
            for (domain, item_id), n in increments.items():
                dom = self._counts.setdefault(domain, {})
                count = dom.get(item_id, 0) + n
                if count > 0:
                    dom[item_id] = count
                else:
                    dom.pop(item_id, None)
            self._version += 1

    def replace(self, domain: str, counts: dict[str, int]) -> None:
        with self._lock:
            self._install(domain, counts)

    def _install(self, domain: str, counts: dict[str, int]) -> None:
        if self._counts.get(domain) != counts:  # caller holds self._lock
            self._counts[domain] = dict(counts)
            self._version += 1

    def refresh(
        self, store: Store, domains: Sequence[str], health: StoreHealth, *, force: bool = False
    ) -> None:
        """Install the store's counts, at most every ``refresh_every_s`` unless ``force``."""
        now = time.monotonic()
        if not force and (
            self.refresh_every_s <= 0 or now - self._last_refresh < self.refresh_every_s
        ):
            return
        self._last_refresh = now
        with self._lock:
            if self._writes_in_flight:
                self._last_refresh = 0.0  # try again at the next tick
                return
            started = self._writes_started
        try:
            counts = {d: store.popularity(d) for d in domains}
        except StoreUnavailable as err:
            health.failed("popularity", err)
            return
        with self._lock:
            if self._writes_in_flight or self._writes_started != started:
                self._last_refresh = 0.0  # a local write overlapped the read: retry later
                return
            for d, c in counts.items():
                self._install(d, c)

    def count(self, domain: str, item_id: str) -> int:
        return self._counts.get(domain, {}).get(item_id, 0)

    def score(self, state: ModelState, domain: str, item_id: str) -> float:
        """One item's popularity as :meth:`ranking` scores it (bundle + API counts)."""
        base = state.bundle_popularity(domain, item_id)
        with self._lock:
            return float(base + self.count(domain, item_id))

    def ranking(self, state: ModelState, domain: str) -> tuple[Sequence[str], np.ndarray]:
        """(ids, scores) of items with popularity > 0, most popular first."""
        key = (state.generation, self._version, state.registered.version)
        cached = self._rankings.get(domain)
        if cached is not None and cached.key == key:
            return cached.ids, cached.scores
        with self._lock:
            api = dict(self._counts.get(domain, {}))
        cat = state.engine.catalogue(domain)
        scores = np.array(cat.popularity, dtype=np.float64)
        extra_ids: list[str] = []
        extra_scores: list[float] = []
        for iid, c in api.items():
            pos = state.engine.bundle_position(iid)
            if pos is not None and pos[0] == domain:
                scores[pos[1]] += c
            elif iid in state.registered:
                extra_ids.append(iid)
                extra_scores.append(float(c))
        all_scores = np.concatenate([scores, np.asarray(extra_scores, dtype=np.float64)])
        order = np.argsort(-all_scores, kind="stable")
        order = order[all_scores[order] > 0]
        ranked = Ranking(key, RankedIds(order, cat.item_ids, extra_ids), all_scores[order])
        self._rankings[domain] = ranked
        return ranked.ids, ranked.scores
