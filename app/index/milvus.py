"""Per-domain index served by a Milvus collection shared by every replica
(``index_backend=milvus``; when to choose it: docs/service.md "Index backend").

The same interface as the FAISS ``DomainIndex`` (app/index/protocol.py), so the rest of
the service does not know which one ranks:

* :meth:`build` attaches to the collection of this domain and bundle version, which the
  first replica needing it fills (app/index/milvus_conn.py); no replica builds a local
  index. The vectors are the serving vectors FAISS would get, unchanged, and with
  ``milvus_index=FLAT`` (exact, metric IP) the ranking is FAISS exact's.
* :meth:`upsert` / :meth:`remove` (the change feed applying a registration or a deletion,
  app/lifecycle/feed.py) write to the collection, so every replica's next search sees
  them, before its own feed catches up. The store stays the source of truth: a write
  Milvus does not take (outage) is kept pending here and sent again before the next
  search; when an outage ends, every replica re-sends the registered items it serves
  (a restarted Milvus may have lost unflushed writes). Every replica applies every change,
  so a write is lost only if Milvus loses it and no replica serving it is left.
* :meth:`search` is the only read that goes to Milvus. Exclusions (seen items,
  ``exclude``) are over-fetched: ``k + |exclude|`` results (at most Milvus's 16384),
  filtered here, which keeps the search a plain top-k (a ``not in [...]`` filter
  expression costs a scan of the list per row). Category filters stay in the service
  (app/serving/answering.py): a selective one scores its few items with :meth:`score`, a
  broad one widens the search until enough match, as with FAISS.
* :meth:`score`, :meth:`vector`, ``len`` and ``in`` are answered locally from the
  bundle's serving vectors (memory-mapped by the engine already) and the registered items
  this replica applied: exact, and no round trip.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from app.index.base import IndexCalibration
from app.index.domain import check_queries, check_vectors
from app.index.milvus_conn import (
    MAX_TOPK,
    IndexUnavailable,
    MilvusConfig,
    MilvusConnection,
    config_doc,
    connection,
)

log = logging.getLogger("micrec.service")

Queries = np.ndarray | Callable[[], np.ndarray] | None


class MilvusDomainIndex:
    """Inner-product top-k over the items of one domain, searched in Milvus."""

    def __init__(self, domain: str, dim: int, config: MilvusConfig) -> None:
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        self.domain = domain
        self.dim = int(dim)
        self.config = config
        self.conn: MilvusConnection = connection(config)
        self.collection = ""
        self._lock = threading.Lock()
        self._base_ids: Sequence[str] = []
        self._base_pos: Callable[[str], int | None] = _nowhere
        self._base_vectors = np.empty((0, self.dim), dtype=np.float32)
        self._hidden: set[str] = set()  # base ids removed or replaced since the build
        self._added: dict[str, np.ndarray] = {}  # upserted here since the build
        self._removed: set[str] = set()  # registered ids removed here since the build
        self._pending: dict[str, np.ndarray | None] = {}  # writes Milvus has not taken
        self._flush_lock = threading.Lock()
        self._recoveries = self.conn.recoveries
        self._deferred = 0

    kind_prefix = "milvus"

    @property
    def kind(self) -> str:
        return f"{self.kind_prefix}-{self.config.index.lower()}"

    @property
    def calibration(self) -> IndexCalibration | None:
        return None

    @property
    def nprobe(self) -> int | None:
        return None

    @property
    def delta_size(self) -> int:
        return len(self._added)

    @property
    def pending(self) -> int:
        """Writes waiting for Milvus (an outage)."""
        return len(self._pending)

    def problem(self) -> str | None:
        """Why this index cannot serve, as its last Milvus call saw it (for /readyz)."""
        if self.conn.error is None:
            return None
        return (
            f"Milvus unavailable ({self.conn.error}): recommends that need the index fail "
            "with 503; registrations are kept and sent when it is back"
        )

    # --- construction --------------------------------------------------------------------
    def build(
        self,
        ids: Sequence[str],
        vectors: np.ndarray,
        *,
        queries: Queries = None,
        source_key: str = "",
        positions: Callable[[str], int | None] | None = None,
    ) -> None:
        """Serve ``ids``/``vectors`` ([n, dim]) from their shared collection (filled by
        the first replica that needs it). ``source_key``: what the vectors were derived
        from (the bundle's manifest hash); without one, the content itself is hashed.
        ``queries`` is accepted for the FAISS signature and unused (nothing to calibrate
        for FLAT)."""
        if positions is None:
            ids = list(ids)
            own = {item_id: k for k, item_id in enumerate(ids)}
            if len(own) != len(ids):
                raise ValueError(f"{self.domain}: duplicate ids in one call")
            positions = own.get
        if vectors.ndim != 2 or vectors.shape[1] != self.dim or len(ids) != vectors.shape[0]:
            raise ValueError(f"{self.domain}: vectors must have shape [{len(ids)}, {self.dim}]")
        key = json.dumps(
            {"source": source_key or _content_key(ids, vectors), "dim": self.dim}
            | {"index": config_doc(self.config)["index"]},
            sort_keys=True,
        )
        name = self._ensure(key, ids, vectors)
        with self._lock:
            self.collection = name
            self._base_ids, self._base_pos, self._base_vectors = ids, positions, vectors
            self._hidden, self._added, self._removed = set(), {}, set()
            self._pending = {}

    def _ensure(self, key: str, ids: Sequence[str], vectors: np.ndarray) -> str:
        """The collection, waiting for Milvus while it is down (up to ``fill_wait_s``): a
        load keeps the old model serving, or the service not ready, meanwhile."""
        deadline = time.monotonic() + self.config.fill_wait_s
        while True:
            try:
                return self.conn.ensure(self.domain, key, ids, vectors)
            except IndexUnavailable:
                if time.monotonic() > deadline:
                    raise
                time.sleep(self.config.retry_s)

    # --- writes --------------------------------------------------------------------------
    def upsert(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        """Add or replace ``ids`` here and in Milvus (pending while Milvus is down)."""
        ids = list(ids)
        x = check_vectors(self.domain, self.dim, ids, vectors)
        if not ids:
            return
        with self._lock:
            for item_id, row in zip(ids, x, strict=True):
                vec = row.copy()
                self._added[item_id] = vec
                self._removed.discard(item_id)
                if self._base_label(item_id) is not None:
                    self._hidden.add(item_id)
                self._pending[item_id] = vec
        self._send_quietly()

    def remove(self, ids: Sequence[str]) -> int:
        """Remove ``ids`` here and from Milvus; returns how many this replica served."""
        removed = 0
        with self._lock:
            for item_id in set(ids):
                if self._added.pop(item_id, None) is not None:
                    removed += 1
                elif self._base_label(item_id) is not None:
                    self._hidden.add(item_id)
                    removed += 1
                self._removed.add(item_id)
                self._pending[item_id] = None
        self._send_quietly()
        return removed

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """Writes inside are sent together at the end (a replay of every registered item
        into a new state: a few upsert calls instead of one per item)."""
        self._deferred += 1
        try:
            yield
        finally:
            self._deferred -= 1
            self._send_quietly()

    def _send_quietly(self) -> None:
        if self._deferred:
            return
        # On failure the writes stay pending: sent before the next search (the connection
        # logs the outage once).
        with contextlib.suppress(IndexUnavailable):
            self._send()

    def _send(self) -> None:
        """Send the pending writes (and, after an outage, everything this replica wrote)."""
        with self._flush_lock:
            if self.conn.recoveries != self._recoveries:
                with self._lock:
                    self._pending = {i: None for i in self._removed} | dict(self._added)
                self._recoveries = self.conn.recoveries
            with self._lock:
                batch = dict(self._pending)
            if not batch:
                return
            rows = [
                {"item_id": i, "vector": v, "registered": True}
                for i, v in batch.items()
                if v is not None
            ]
            gone = [i for i, v in batch.items() if v is None]
            name, timeout, step = self.collection, self.config.timeout_s, self.config.insert_batch
            for start in range(0, len(rows), step):
                part = rows[start : start + step]
                self.conn.loaded_call(
                    name,
                    "register",
                    lambda c: c.upsert(name, part, timeout=timeout),  # noqa: B023
                )
            if gone:
                self.conn.loaded_call(
                    name, "delete", lambda c: c.delete(name, ids=gone, timeout=timeout)
                )
            with self._lock:
                for item_id, vec in batch.items():
                    if self._pending.get(item_id, 0) is vec:  # not written again meanwhile
                        del self._pending[item_id]

    # --- reads ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._base_ids) - len(self._hidden) + len(self._added)

    def __contains__(self, item_id: object) -> bool:
        if not isinstance(item_id, str):
            return False
        return item_id in self._added or self._base_label(item_id) is not None

    def _base_label(self, item_id: str) -> int | None:
        if item_id in self._hidden:
            return None
        label = self._base_pos(item_id)
        return label if label is not None and label < len(self._base_ids) else None

    def _local(self, item_id: str) -> np.ndarray | None:
        vec = self._added.get(item_id)
        if vec is not None:
            return vec
        label = self._base_label(item_id)
        if label is None:
            return None
        return np.asarray(self._base_vectors[label], dtype=np.float32)

    def vector(self, item_id: str) -> np.ndarray | None:
        vec = self._local(item_id)
        return None if vec is None else vec.copy()

    def score(self, query: np.ndarray, ids: Sequence[str]) -> list[tuple[str, float]]:
        """Exact inner products with the stored vectors of ``ids`` (local; ids this replica
        does not serve are left out)."""
        q = np.ascontiguousarray(np.asarray(query, dtype=np.float32).reshape(-1))
        if q.shape[0] != self.dim or not np.isfinite(q).all():
            raise ValueError(f"{self.domain}: query must be {self.dim} finite numbers")
        found = [(i, v) for i in ids if (v := self._local(i)) is not None]
        if not found:
            return []
        scores = np.stack([v for _, v in found]) @ q
        return list(zip([i for i, _ in found], scores.tolist(), strict=True))

    def search(
        self, queries: np.ndarray, k: int, *, exclude: Sequence[set[str]] | None = None
    ) -> list[list[tuple[str, float]]]:
        """Top-``k`` (id, inner product) per query row, best first, ``exclude[i]`` left
        out; raises IndexUnavailable when Milvus does not answer."""
        q = check_queries(self.domain, self.dim, queries, exclude)
        m = q.shape[0]
        if m == 0 or k <= 0:
            return [[] for _ in range(m)]
        self._send()  # a write Milvus missed is served before anything else
        extra = max((len(ex) for ex in exclude), default=0) if exclude is not None else 0
        fetch = min(k + extra, MAX_TOPK)
        name, cfg = self.collection, self.config
        params: dict[str, Any] = {"metric_type": "IP"}
        if cfg.index == "HNSW":
            params["params"] = {"ef": max(fetch, cfg.hnsw_ef)}
        found = self.conn.loaded_call(
            name,
            "search",
            lambda c: c.search(
                name,
                data=list(q),
                limit=fetch,
                anns_field="vector",
                search_params=params,
                output_fields=[],
                timeout=cfg.timeout_s,
            ),
        )
        out = []
        for row, hits in enumerate(found):
            skip = exclude[row] if exclude is not None else ()
            picked = [(str(h["item_id"]), float(h["distance"])) for h in hits]
            out.append([(i, s) for i, s in picked if i not in skip][:k])
        return out

    def export(self) -> tuple[list[str], np.ndarray]:
        """(ids, [n, dim] vectors) this replica serves (for exact comparisons)."""
        with self._lock:
            ids = [i for i in self._base_ids if i not in self._hidden] + list(self._added)
        if not ids:
            return [], np.empty((0, self.dim), dtype=np.float32)
        return ids, np.stack([v for i in ids if (v := self._local(i)) is not None])


def _content_key(ids: Sequence[str], vectors: np.ndarray) -> str:
    """A hash of the items themselves (for vectors that come from no bundle file)."""
    h = hashlib.sha256()
    for item_id in ids:
        h.update(item_id.encode())
        h.update(b"\0")
    h.update(np.ascontiguousarray(vectors, dtype=np.float32).tobytes())
    return h.hexdigest()


def _nowhere(item_id: str) -> int | None:
    return None
