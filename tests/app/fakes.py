"""Test doubles for the service tests (nothing here is used by the service itself).

* :class:`FakeEngine` - a FAKE engine: deterministic random vectors, no torch model, no
  encoders. It implements ``app.lifecycle.engine.Engine`` (the protocol the service calls, which
  ``model.inference.InferenceEngine`` implements too) so the HTTP layer can be tested fast
  and exactly; it says nothing about recommendation quality. Its "bundle" is a directory holding ``fake-bundle.json``.
* :class:`FakeEngineFactory` - what the ``engine_factory`` fixture returns: loads a fake
  bundle (``__call__``) and writes one (``make_bundle``). Switching the suite to a real
  tiny bundle means returning an object with the same two methods backed by
  ``model.bundle`` (the only fixture to change).
* :class:`MemoryStore` - an in-memory ``Store`` for service-level unit tests, and
  :class:`FlakyStore`, a wrapper that can be switched "down" (``StoreUnavailable``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import threading
import time
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from app.store.base import (
    Canary,
    ErasureRecords,
    IdempotencyRecord,
    Interaction,
    ItemChange,
    PurgeState,
    Store,
    StoredItem,
    StoreUnavailable,
    WantedBundle,
)
from app.store.online import HourCounts, OnlineCounts, RecommendationRecord, StoredRecommendation
from model.bundle import BundleError
from model.encoders.records import EncoderUnavailable
from model.serving_types import DomainCatalogue, UserEmbedding
from tests.app.fakes_online import MemoryRecommendations

FAKE_MANIFEST = "fake-bundle.json"
TEXT_DIM = 8
IMAGE_DIM = 8


def _seeded(*parts: object) -> np.random.Generator:
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32)
    norm = float(np.linalg.norm(v))
    return v / norm if norm > 0 else v


class FakeEngine:
    """FAKE inference engine (test double): deterministic vectors, no model.

    Items of domain ``d`` are ``"<d>-<k>"`` with unit vectors seeded by the id;
    ``popularity`` decreases with ``k``; categories are ``"<d>|group<k % 3>"``.
    A user is the mean of their history's item vectors (domain items -> "inductive",
    other domains' items -> "cross_domain", nothing -> "none").
    """

    def __init__(self, manifest: Mapping[str, Any]) -> None:
        self.model_version = str(manifest["model_version"])
        sizes: dict[str, int] = dict(manifest["domains"])
        self.domains = sorted(sizes)
        self.dim = int(manifest.get("dim", 16))
        self.encoders_info = {
            m: {"name": f"fake-{m}", "dim": TEXT_DIM if m == "text" else IMAGE_DIM}
            for m in manifest.get("modalities", ["text", "image"])
        }
        self.unavailable: dict[str, str] = dict(manifest.get("unavailable", {}))
        """Modality -> reason, as a bundle whose encoder is missing here (FAKE)."""
        self._users: dict[str, dict[str, list[str]]] = {
            u: {d: list(ids) for d, ids in h.items()} for u, h in manifest.get("users", {}).items()
        }
        self._catalogues: dict[str, DomainCatalogue] = {}
        self._vectors: dict[str, np.ndarray] = {}
        self._domain_of: dict[str, str] = {}
        for d, n in sizes.items():
            ids = [f"{d}-{k}" for k in range(n)]
            vecs = (
                np.stack([_unit(_seeded(self.model_version, i).normal(size=self.dim)) for i in ids])
                if n
                else np.zeros((0, self.dim), np.float32)
            )
            self._catalogues[d] = DomainCatalogue(
                domain=d,
                item_ids=ids,
                vectors=vecs.astype(np.float32),
                popularity=np.arange(n, 0, -1, dtype=np.int64),
                categories=[f"{d}|group{k % 3}" for k in range(n)],
                titles=[f"{d} item {k}" for k in range(n)],
            )
            self._vectors.update(zip(ids, vecs, strict=True))
            self._domain_of.update({i: d for i in ids})
        self._added: dict[str, tuple[str, np.ndarray]] = {}
        self._proj = {
            m: _seeded("proj", m).normal(size=(self.dim, info["dim"])).astype(np.float32)
            for m, info in self.encoders_info.items()
        }
        self.add_calls = 0
        self.batches: list[int] = []
        """The size of each ``embed_users`` call (the model thread's batches)."""

    # --- catalogue --------------------------------------------------------------------
    def catalogue(self, domain: str) -> DomainCatalogue:
        if domain not in self._catalogues:
            raise KeyError(domain)
        return self._catalogues[domain]

    def item_domain(self, item_id: str) -> str | None:
        if item_id in self._domain_of:
            return self._domain_of[item_id]
        added = self._added.get(item_id)
        return added[0] if added else None

    def bundle_position(self, item_id: str) -> tuple[str, int] | None:
        domain = self._domain_of.get(item_id)
        return None if domain is None else (domain, int(item_id.rsplit("-", 1)[1]))

    def bundle_history(self, user_id: str) -> dict[str, list[str]]:
        return {d: list(ids) for d, ids in self._users.get(user_id, {}).items()}

    def _vector(self, item_id: str) -> np.ndarray | None:
        if item_id in self._vectors:
            return self._vectors[item_id]
        added = self._added.get(item_id)
        return added[1] if added else None

    # --- users ------------------------------------------------------------------------
    def embed_user(self, domain: str, history: Mapping[str, Sequence[str]]) -> UserEmbedding:
        if domain not in self._catalogues:
            raise KeyError(domain)
        local: list[np.ndarray] = []
        other: list[np.ndarray] = []
        for ids in history.values():
            for iid in dict.fromkeys(ids):
                vec = self._vector(iid)
                if vec is None:
                    continue
                (local if self.item_domain(iid) == domain else other).append(vec)
        if local:
            return UserEmbedding(
                _unit(np.mean(local, axis=0)), "inductive", len(local) + len(other)
            )
        if other:
            return UserEmbedding(_unit(np.mean(other, axis=0)), "cross_domain", len(other))
        return UserEmbedding(np.zeros(self.dim, np.float32), "none", 0)

    def embed_users(
        self, domain: str, histories: Sequence[Mapping[str, Sequence[str]]]
    ) -> list[UserEmbedding]:
        self.batches.append(len(histories))
        return [self.embed_user(domain, h) for h in histories]

    def sample_user_vectors(self, domain: str, limit: int) -> np.ndarray:
        vecs = [
            self.embed_user(domain, {domain: h[domain]}).vector
            for h in self._users.values()
            if h.get(domain)
        ][:limit]
        return np.stack(vecs) if vecs else np.empty((0, self.dim), np.float32)

    # --- items ------------------------------------------------------------------------
    def encode_content(self, *, text: str | None, image: Any | None) -> dict[str, np.ndarray]:
        for m, x in (("text", text), ("image", image)):
            if x and m in self.unavailable:
                raise EncoderUnavailable(self.unavailable[m])
        out: dict[str, np.ndarray] = {}
        if text and "text" in self.encoders_info:
            out["text"] = _unit(_seeded("text", text).normal(size=TEXT_DIM))
        if image is not None and "image" in self.encoders_info:
            pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
            out["image"] = _unit(
                _seeded("image", pixels.mean(axis=(0, 1)).round(3).tolist(), image.size).normal(
                    size=IMAGE_DIM
                )
            )
        return out

    def add_item(self, item_id: str, domain: str, content: Mapping[str, np.ndarray]) -> np.ndarray:
        if domain not in self._catalogues:
            raise KeyError(domain)
        if item_id in self._domain_of:
            raise ValueError(f"item {item_id!r} is part of the bundle")
        vec = np.zeros(self.dim, np.float32)
        for m, v in content.items():
            if m in self._proj:
                vec += self._proj[m] @ np.asarray(v, np.float32)
        vec = _unit(vec) if np.any(vec) else _unit(_seeded("token", domain).normal(size=self.dim))
        self._added[item_id] = (domain, vec)
        self.add_calls += 1
        return vec

    def remove_item(self, item_id: str) -> None:
        self._added.pop(item_id, None)

    # --- queries: the content projection a registered item would get ------------------
    @property
    def encoders_unavailable(self) -> dict[str, str]:
        return dict(self.unavailable)

    def query_modalities(self) -> list[str]:
        return sorted(self.encoders_info)

    def encode_query(self, *, text: str | None, image: Any | None) -> dict[str, np.ndarray]:
        return self.encode_content(text=text, image=image)

    def query_vector(self, domain: str, content: Mapping[str, np.ndarray]) -> UserEmbedding:
        if domain not in self._catalogues:
            raise KeyError(domain)
        vec = np.zeros(self.dim, np.float32)
        for m, v in content.items():
            vec += self._proj[m] @ np.asarray(v, np.float32)
        if not np.any(vec):
            raise ValueError("empty query")
        return UserEmbedding(_unit(vec), "query", 0)


class FakeEngineFactory:
    """The ``engine_factory`` fixture's value: ``factory(path) -> engine`` and
    ``factory.make_bundle(dir, version=...) -> path``."""

    def __init__(self, domains: Mapping[str, int] | None = None) -> None:
        self.domains = dict(domains or {"arts": 60, "office": 40})
        self.loads = 0
        self.gate: threading.Event | None = None
        """When set, loads wait for it (lets a test hold a reload half-way)."""

    def make_bundle(
        self,
        directory: Path,
        *,
        version: str = "fake-v1",
        users: Mapping[str, Mapping[str, Sequence[str]]] | None = None,
        modalities: Sequence[str] = ("text", "image"),
        unavailable: Mapping[str, str] | None = None,
    ) -> Path:
        """``unavailable``: modality -> reason, encoders the engine says it cannot make."""
        directory.mkdir(parents=True, exist_ok=True)
        manifest = {
            "model_version": version,
            "domains": self.domains,
            "dim": 16,
            "modalities": list(modalities),
            "users": users or {"u-bundle": {"arts": ["arts-1", "arts-2"]}},
            "unavailable": dict(unavailable or {}),
        }
        body = json.dumps(manifest, sort_keys=True)
        payload = {"manifest": manifest, "sha256": hashlib.sha256(body.encode()).hexdigest()}
        (directory / FAKE_MANIFEST).write_text(json.dumps(payload))
        return directory

    def __call__(self, path: Path) -> FakeEngine:
        if self.gate is not None:
            self.gate.wait(30)
        self.loads += 1
        f = Path(path) / FAKE_MANIFEST
        if not f.is_file():
            raise BundleError(f"{path}: not a bundle ({FAKE_MANIFEST} missing)")
        try:
            payload = json.loads(f.read_text())
            manifest = payload["manifest"]
        except (ValueError, KeyError) as err:
            raise BundleError(f"{path}: unreadable manifest ({err})") from err
        body = json.dumps(manifest, sort_keys=True)
        if hashlib.sha256(body.encode()).hexdigest() != payload.get("sha256"):
            raise BundleError(f"{path}: manifest does not match its sha256 (tampered)")
        return FakeEngine(manifest)


class MemoryStore(MemoryRecommendations, Store):
    """In-memory ``Store`` (test double) following the contract in app/store/base.py."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: dict[str, StoredItem] = {}
        self._changes: list[ItemChange] = []
        self._history: dict[str, dict[str, list[str]]] = {}
        self._pop: dict[str, dict[str, int]] = {}
        self._pairs: set[tuple[str, str, str]] = set()
        self._sources: dict[tuple[str, str, str], set[str]] = {}  # (domain, item, source)
        self._idem: dict[str, tuple[IdempotencyRecord, float]] = {}
        self._erased: dict[str, float] = {}
        self._stamps: dict[str, dict[str, list[float]]] = {}  # aligned with _history
        self._count = 0
        self._wanted: WantedBundle | None = None
        self._canary: Canary | None = None
        self._init_recommendations()

    def ping(self) -> bool:
        return True

    def _change(self, item_id: str, deleted: bool) -> int:
        seq = len(self._changes) + 1
        self._changes.append(ItemChange(seq, item_id, deleted))
        return seq

    def put_item(self, item: StoredItem) -> int:
        with self._lock:
            self._items[item.item_id] = item
            return self._change(item.item_id, False)

    def get_item(self, item_id: str) -> StoredItem | None:
        return self._items.get(item_id)

    def delete_item(self, item_id: str) -> int | None:
        with self._lock:
            if self._items.pop(item_id, None) is None:
                return None
            return self._change(item_id, True)

    def list_items(self) -> list[StoredItem]:
        return list(self._items.values())

    def item_changes(self, after_seq: int, limit: int = 1000) -> list[ItemChange]:
        return [c for c in self._changes if c.seq > after_seq][:limit]

    def add_interactions(
        self,
        rows: Sequence[Interaction],
        history_cap: int,
        *,
        source: str = "",
        source_cap: int = 0,
    ) -> dict[tuple[str, str], int]:
        new: dict[tuple[str, str], int] = {}
        with self._lock:
            for r in rows:
                h = self._history.setdefault(r.user_id, {}).setdefault(r.domain, [])
                h.append(r.item_id)
                del h[:-history_cap]
                ts = self._stamps.setdefault(r.user_id, {}).setdefault(r.domain, [])
                ts.append(float(r.timestamp))
                del ts[:-history_cap]
                self._count += 1
                if (r.domain, r.item_id, r.user_id) in self._pairs:
                    continue
                by_source = self._sources.setdefault((r.domain, r.item_id, source), set())
                if 0 < source_cap <= len(by_source):
                    continue
                by_source.add(r.user_id)
                self._pairs.add((r.domain, r.item_id, r.user_id))
                pop = self._pop.setdefault(r.domain, {})
                pop[r.item_id] = pop.get(r.item_id, 0) + 1
                new[(r.domain, r.item_id)] = new.get((r.domain, r.item_id), 0) + 1
        return new

    def get_history(self, user_id: str) -> dict[str, list[str]]:
        return {d: list(v) for d, v in self._history.get(user_id, {}).items()}

    def popularity(self, domain: str) -> dict[str, int]:
        return dict(self._pop.get(domain, {}))

    def erase_user(self, user_id: str, erased_at: float) -> dict[tuple[str, str], int]:
        with self._lock:
            mine = {p for p in self._pairs if p[2] == user_id}
            self._pairs -= mine
            for domain, item_id, _ in mine:
                pop = self._pop[domain]
                pop[item_id] -= 1
                if pop[item_id] <= 0:
                    del pop[item_id]
            for users in self._sources.values():
                users.discard(user_id)
            self._history.pop(user_id, None)
            self._stamps.pop(user_id, None)
            self._erase_recommendations(user_id)
            for key in [k for k, (rec, _) in self._idem.items() if user_id in rec.users]:
                del self._idem[key]
            self._erased[user_id] = erased_at
            return {(d, i): 1 for d, i, _ in mine}

    def is_erased(self, user_id: str) -> bool:
        return user_id in self._erased

    def iter_interactions(self, batch: int = 1000) -> Iterator[Interaction]:
        with self._lock:
            rows = [
                Interaction(u, i, d, t)
                for u, doms in self._history.items()
                for d, items in doms.items()
                for i, t in zip(items, self._stamps[u][d], strict=True)
            ]
        yield from rows

    def iter_items(self, batch: int = 500) -> Iterator[StoredItem]:
        yield from list(self._items.values())

    def interaction_count(self) -> int:
        return self._count

    def erased_users(self) -> ErasureRecords:
        return ErasureRecords.of_ids(self._erased)

    def set_bundle_version(self, version: str, announced_at: float) -> None:
        self._wanted = WantedBundle(version, announced_at)

    def get_bundle_version(self) -> WantedBundle | None:
        return self._wanted

    def set_canary(self, canary: Canary | None) -> None:
        self._canary = canary

    def get_canary(self) -> Canary | None:
        return self._canary

    def decide_canary(self, salt: str, outcome: str) -> bool:
        with self._lock:
            c = self._canary
            if c is None or c.salt != salt or c.decided is not None:
                return False
            self._canary = dataclasses.replace(c, decided=outcome)
            return True

    def _live_idem(self, key: str) -> IdempotencyRecord | None:
        record, expires = self._idem.get(key, (None, 0.0))
        return record if time.time() < expires else None

    def claim_idempotency_key(
        self, key: str, claim: IdempotencyRecord, ttl_s: float
    ) -> IdempotencyRecord | None:
        with self._lock:
            found = self._live_idem(key)
            if found is None:
                self._idem[key] = (claim, time.time() + ttl_s)
            return found

    def complete_idempotency_key(
        self, key: str, claim: IdempotencyRecord, answer: IdempotencyRecord, ttl_s: float
    ) -> bool:
        with self._lock:
            found = self._live_idem(key)
            if found is not None and found.token != claim.token:
                return False
            users = tuple({*answer.users, *(found.users if found else ())})
            self._idem[key] = (replace(answer, users=users), time.time() + ttl_s)
            return True

    def release_idempotency_key(self, key: str, claim: IdempotencyRecord) -> None:
        with self._lock:
            if self._live_idem(key) == claim:
                del self._idem[key]


class FlakyStore(Store):
    """Wraps a store; while ``down`` is True every call raises ``StoreUnavailable``."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.down = False

    def _check(self) -> None:
        if self.down:
            raise StoreUnavailable("store is down (FlakyStore)")

    def ping(self) -> bool:
        return not self.down and self.inner.ping()

    def put_item(self, item: StoredItem) -> int:
        self._check()
        return self.inner.put_item(item)

    def get_item(self, item_id: str) -> StoredItem | None:
        self._check()
        return self.inner.get_item(item_id)

    def delete_item(self, item_id: str) -> int | None:
        self._check()
        return self.inner.delete_item(item_id)

    def list_items(self) -> list[StoredItem]:
        self._check()
        return self.inner.list_items()

    def item_changes(self, after_seq: int, limit: int = 1000) -> list[ItemChange]:
        self._check()
        return self.inner.item_changes(after_seq, limit)

    def add_interactions(
        self,
        rows: Sequence[Interaction],
        history_cap: int,
        *,
        source: str = "",
        source_cap: int = 0,
    ) -> dict[tuple[str, str], int]:
        self._check()
        return self.inner.add_interactions(rows, history_cap, source=source, source_cap=source_cap)

    def get_history(self, user_id: str) -> dict[str, list[str]]:
        self._check()
        return self.inner.get_history(user_id)

    def popularity(self, domain: str) -> dict[str, int]:
        self._check()
        return self.inner.popularity(domain)

    def erase_user(self, user_id: str, erased_at: float) -> dict[tuple[str, str], int]:
        self._check()
        return self.inner.erase_user(user_id, erased_at)

    def is_erased(self, user_id: str) -> bool:
        self._check()
        return self.inner.is_erased(user_id)

    def erased_users(self) -> ErasureRecords:
        self._check()
        return self.inner.erased_users()

    def purge_erased(self, min_interval_s: float = 0.0) -> PurgeState:
        self._check()
        return self.inner.purge_erased(min_interval_s)

    def iter_interactions(self, batch: int = 1000) -> Iterator[Interaction]:
        self._check()
        return self.inner.iter_interactions(batch)

    def iter_items(self, batch: int = 500) -> Iterator[StoredItem]:
        self._check()
        return self.inner.iter_items(batch)

    def interaction_count(self) -> int:
        self._check()
        return self.inner.interaction_count()

    def set_bundle_version(self, version: str, announced_at: float) -> None:
        self._check()
        self.inner.set_bundle_version(version, announced_at)

    def get_bundle_version(self) -> WantedBundle | None:
        self._check()
        return self.inner.get_bundle_version()

    def set_canary(self, canary: Canary | None) -> None:
        self._check()
        self.inner.set_canary(canary)

    def get_canary(self) -> Canary | None:
        self._check()
        return self.inner.get_canary()

    def decide_canary(self, salt: str, outcome: str) -> bool:
        self._check()
        return self.inner.decide_canary(salt, outcome)

    def claim_idempotency_key(
        self, key: str, claim: IdempotencyRecord, ttl_s: float
    ) -> IdempotencyRecord | None:
        self._check()
        return self.inner.claim_idempotency_key(key, claim, ttl_s)

    def complete_idempotency_key(
        self, key: str, claim: IdempotencyRecord, answer: IdempotencyRecord, ttl_s: float
    ) -> bool:
        self._check()
        return self.inner.complete_idempotency_key(key, claim, answer, ttl_s)

    def release_idempotency_key(self, key: str, claim: IdempotencyRecord) -> None:
        self._check()
        self.inner.release_idempotency_key(key, claim)

    def put_recommendations(
        self, records: Sequence[RecommendationRecord], ttl_s: float, max_records: int
    ) -> int:
        self._check()
        return self.inner.put_recommendations(records, ttl_s, max_records)

    def get_recommendation(self, recommendation_id: str) -> StoredRecommendation | None:
        self._check()
        return self.inner.get_recommendation(recommendation_id)

    def add_feedback(
        self,
        recommendation_id: str,
        events: Sequence[tuple[str, str]],
        positive: Collection[str],
    ) -> list[int] | None:
        self._check()
        return self.inner.add_feedback(recommendation_id, events, positive)

    def online_versions(self) -> list[tuple[str, str]]:
        self._check()
        return self.inner.online_versions()

    def online_counts(self, version: str, domain: str) -> OnlineCounts:
        self._check()
        return self.inner.online_counts(version, domain)

    def online_hourly(self, version: str, domain: str, since: float) -> list[HourCounts]:
        self._check()
        return self.inner.online_hourly(version, domain, since)


def wait_until(predicate: Any, timeout: float = 10.0, interval: float = 0.02) -> bool:
    """Poll ``predicate`` until true (for eventual effects like replica sync); the
    timeout only bounds a failing test, no assertion is made about timing."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())
