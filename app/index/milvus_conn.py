"""The Milvus side of the Milvus index backend (app/index/milvus.py).

* **One client per process** (:func:`connection`), shared by every domain and model
  state; ``pymilvus`` is imported only when the backend is chosen.
* **Every call is bounded** (``timeout_s``) and a failure becomes :class:`IndexUnavailable`
  (the HTTP layer answers 503 naming Milvus). After a failure, calls fail at once for
  ``retry_s`` instead of each waiting for the deadline: a Milvus outage never piles up
  blocked model threads. :attr:`MilvusConnection.recoveries` counts the outages that
  ended, so the indexes re-send what Milvus may have lost (app/index/milvus.py).
* **Collections** (:meth:`MilvusConnection.ensure`): one per (domain, bundle version,
  dimension, index type), named from their hash, shared by every replica. The first
  replica that needs one claims it in the ``<prefix>_meta`` collection, fills it with
  idempotent upserts (primary key = item id) in batches, flushes it and marks it
  ``complete``; the others wait for the mark and only then use it, so a half-filled
  collection is never searched. A claim not renewed for ``fill_wait_s`` (the filler
  died) is taken over; two replicas claiming at once both fill, which costs time but
  not correctness (the same rows upserted twice). After a fill or an attach, collections
  of the domain beyond the ``keep_versions`` most recently used are dropped.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

import numpy as np

log = logging.getLogger("micrec.service")

T = TypeVar("T")

META = "meta"
MAX_TOPK = 16_384
"""Milvus's largest ``limit`` of one search."""
ID_BYTES = 1024
"""VARCHAR length of the item id: 256 characters (app/api/ids.py), up to 4 bytes each."""


class IndexUnavailable(Exception):
    """The index engine (Milvus) did not answer; a request needing it gets a 503."""


@dataclass(frozen=True)
class MilvusConfig:
    """How to reach Milvus and shape its collections (from ``MICREC_MILVUS_*``)."""

    uri: str
    token: str = ""
    prefix: str = "micrec"
    consistency: str = "Strong"
    timeout_s: float = 5.0
    retry_s: float = 1.0
    index: str = "FLAT"
    hnsw_ef: int = 128
    insert_batch: int = 5000
    fill_wait_s: float = 600.0
    keep_versions: int = 2


_connections: dict[tuple[str, str], MilvusConnection] = {}
_connections_lock = threading.Lock()


def connection(config: MilvusConfig) -> MilvusConnection:
    """The process's connection for ``config`` (one client per URI and token)."""
    with _connections_lock:
        conn = _connections.get((config.uri, config.token))
        if conn is None or conn.config != config:
            conn = MilvusConnection(config)
            _connections[(config.uri, config.token)] = conn
        return conn


def collection_name(prefix: str, domain: str, key: str) -> str:
    """A valid Milvus name (letters, digits, _) for any domain, unique per ``key``."""
    slug = re.sub(r"[^A-Za-z0-9]", "_", domain)[:40]
    digest = hashlib.sha256(f"{domain}\0{key}".encode()).hexdigest()[:16]
    return f"{prefix}_{slug}_{digest}"


class MilvusConnection:
    def __init__(self, config: MilvusConfig) -> None:
        self.config = config
        self._client: Any = None
        self._lock = threading.Lock()
        self._down_until = 0.0
        self.error: str | None = None
        """Why Milvus was last unreachable, while it is, else None."""
        self.recoveries = 0
        self.owner = f"{socket.gethostname()}:{os.getpid()}"

    # --- calls ---------------------------------------------------------------------------
    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                from pymilvus import MilvusClient

                # pymilvus logs every failed call with its traceback (its loggers are set
                # up on import); the outage is logged once by call() instead.
                for name in ("pymilvus", "pymilvus.milvus_client"):
                    logging.getLogger(name).setLevel(logging.CRITICAL)

                self._client = MilvusClient(
                    uri=self.config.uri, token=self.config.token, timeout=self.config.timeout_s
                )
            return self._client

    def call(self, what: str, fn: Callable[[Any], T]) -> T:
        """``fn(client)``, or IndexUnavailable when Milvus fails (or failed < retry_s ago)."""
        if time.monotonic() < self._down_until:
            raise IndexUnavailable(self._message(what))
        try:
            out = fn(self.client())
        except Exception as err:
            self._down_until = time.monotonic() + self.config.retry_s
            if self.error is None:
                log.warning("Milvus unavailable (%s): %s", what, err)
            self.error = _reason(err)
            raise IndexUnavailable(self._message(what)) from err
        if self.error is not None:
            log.info("Milvus available again")
            self.error = None
            self.recoveries += 1
        return out

    def _message(self, what: str) -> str:
        return (
            f"the Milvus vector index is unavailable ({what}: {self.error or 'failed'}); "
            "recommendations need it, retry later"
        )

    def loaded_call(self, name: str, what: str, fn: Callable[[Any], T]) -> T:
        """:meth:`call`, loading ``name`` first when Milvus says it is not loaded (a
        restarted Milvus releases its collections)."""
        try:
            return self.call(what, fn)
        except IndexUnavailable as err:
            if "load" not in str(err.__cause__).lower():
                raise
        self._down_until = 0.0
        self.call("load", lambda c: c.load_collection(name, timeout=self.config.timeout_s))
        return self.call(what, fn)

    # --- collections ---------------------------------------------------------------------
    def ensure(self, domain: str, key: str, ids: Sequence[str], vectors: np.ndarray) -> str:
        """The name of the complete collection of ``domain`` for ``key``, filled here from
        ``ids``/``vectors`` unless another replica did or does (module docstring)."""
        cfg = self.config
        name = collection_name(cfg.prefix, domain, f"{key}\0{cfg.index}")
        self._ensure_meta()
        while True:
            row = self._meta_row(name)
            if row is not None and row["state"] == "complete" and self._has(name):
                self._meta_put(name, domain, "complete", int(row["rows"]))
                break
            if (
                row is None
                or row["state"] != "filling"
                or time.time() - row["beat"] > cfg.fill_wait_s
            ):
                self._fill(name, domain, ids, vectors)
                break
            time.sleep(0.5)  # another replica is filling it
        self.call("load", lambda c: c.load_collection(name, timeout=cfg.timeout_s))
        self.prune(domain)
        return name

    def _fill(self, name: str, domain: str, ids: Sequence[str], vectors: np.ndarray) -> None:
        cfg, n = self.config, len(ids)
        self._meta_put(name, domain, "filling", n)
        t = time.perf_counter()
        if not self._has(name):
            self._create(name, int(vectors.shape[1]))
        for start in range(0, n, cfg.insert_batch):
            stop = min(n, start + cfg.insert_batch)
            x = np.asarray(vectors[start:stop], dtype=np.float32)
            rows = [
                {"item_id": ids[start + j], "vector": x[j], "registered": False}
                for j in range(stop - start)
            ]
            self.call("fill", lambda c: c.upsert(name, rows, timeout=max(cfg.timeout_s, 60)))  # noqa: B023
            self._meta_put(name, domain, "filling", n)  # the heartbeat of the claim
        self.call("flush", lambda c: c.flush(name, timeout=max(cfg.timeout_s, 600)))
        self._meta_put(name, domain, "complete", n)
        log.info("%s: filled Milvus collection %s with %d items in %.1f s", domain, name, n,
                 time.perf_counter() - t)  # fmt: skip

    def _create(self, name: str, dim: int) -> None:
        from pymilvus import DataType, MilvusClient

        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("item_id", DataType.VARCHAR, max_length=ID_BYTES, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
        schema.add_field("registered", DataType.BOOL)
        client = self.client()
        params = client.prepare_index_params()
        if self.config.index == "HNSW":
            params.add_index(
                "vector", index_type="HNSW", metric_type="IP",
                params={"M": 16, "efConstruction": 200},
            )  # fmt: skip
        else:
            params.add_index("vector", index_type="FLAT", metric_type="IP")
        self._create_if_missing(
            name,
            lambda c: c.create_collection(
                name,
                schema=schema,
                index_params=params,
                consistency_level=self.config.consistency,
                timeout=self.config.timeout_s,
            ),
        )

    def _create_if_missing(self, name: str, create: Callable[[Any], object]) -> None:
        """Create ``name``; another replica creating it at the same moment is no failure."""
        try:
            self.call("create collection", create)
        except IndexUnavailable:
            self._down_until, self.error = 0.0, None  # the race, not an outage, if it exists
            if not self._has(name):
                raise

    def _has(self, name: str) -> bool:
        return bool(
            self.call("list", lambda c: c.has_collection(name, timeout=self.config.timeout_s))
        )

    def _ensure_meta(self) -> None:
        meta = f"{self.config.prefix}_{META}"
        if self._has(meta):
            return
        from pymilvus import DataType, MilvusClient

        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("name", DataType.VARCHAR, max_length=255, is_primary=True)
        schema.add_field("domain", DataType.VARCHAR, max_length=ID_BYTES)
        schema.add_field("state", DataType.VARCHAR, max_length=16)
        schema.add_field("owner", DataType.VARCHAR, max_length=255)
        schema.add_field("beat", DataType.DOUBLE)
        schema.add_field("rows", DataType.INT64)
        schema.add_field("v", DataType.FLOAT_VECTOR, dim=2)  # Milvus wants one vector field
        params = self.client().prepare_index_params()
        params.add_index("v", index_type="FLAT", metric_type="L2")
        self._create_if_missing(
            meta,
            lambda c: c.create_collection(
                meta, schema=schema, index_params=params, consistency_level="Strong"
            ),
        )
        self.call("load", lambda c: c.load_collection(meta))

    def _meta_row(self, name: str) -> dict[str, Any] | None:
        meta = f"{self.config.prefix}_{META}"
        rows = self.call(
            "read meta",
            lambda c: c.get(meta, ids=[name], output_fields=["state", "beat", "rows", "owner"]),
        )
        return dict(rows[0]) if rows else None

    def _meta_put(self, name: str, domain: str, state: str, rows: int) -> None:
        """The collection's state; ``beat`` = now (for a complete one: when it was last
        used, the order of pruning)."""
        meta = f"{self.config.prefix}_{META}"
        row = {
            "name": name, "domain": domain, "state": state, "owner": self.owner,
            "beat": time.time(), "rows": rows, "v": [0.0, 0.0],
        }  # fmt: skip
        self.call("write meta", lambda c: c.upsert(meta, [row]))

    def prune(self, domain: str) -> list[str]:
        """Drop the complete collections of ``domain`` beyond the ``keep_versions`` most
        recently used; returns their names. Fillings in progress are left alone."""
        meta = f"{self.config.prefix}_{META}"
        escaped = domain.replace("\\", "\\\\").replace('"', '\\"')
        rows = self.call(
            "read meta",
            lambda c: c.query(
                meta, filter=f'domain == "{escaped}"', output_fields=["name", "state", "beat"]
            ),
        )
        done = sorted((r for r in rows if r["state"] == "complete"), key=lambda r: -r["beat"])
        dropped = []
        for r in done[self.config.keep_versions :]:
            old = str(r["name"])
            self.call("drop collection", lambda c: c.drop_collection(old))  # noqa: B023
            self.call("write meta", lambda c: c.delete(meta, ids=[old]))  # noqa: B023
            log.info("%s: dropped Milvus collection %s (older than the %d kept)", domain, old,
                     self.config.keep_versions)  # fmt: skip
            dropped.append(old)
        return dropped


def _reason(err: Exception) -> str:
    """The error's type and code, bounded (no server text: it may name hosts)."""
    code = getattr(err, "code", None)
    if callable(code):  # gRPC errors: code() -> StatusCode.DEADLINE_EXCEEDED
        code = getattr(code(), "name", None)
    return type(err).__name__ + (f" code {str(code)[:40]}" if code is not None else "")


def config_doc(config: MilvusConfig) -> dict[str, Any]:
    """The config without its secret (for logs and the cache key)."""
    return {k: v for k, v in asdict(config).items() if k != "token"}
