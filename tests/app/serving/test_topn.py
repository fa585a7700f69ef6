"""The top-N cache (app/serving/topn.py): cached answers equal live ones for the same state.

Two replicas share one store: ``cached`` keeps the cache (20 items per list, so lists are
full and a low-scoring new item leaves them valid), ``live`` has it off and computes every
answer. Every change is made through ``live`` (another replica, as far as ``cached`` is
concerned) and ``cached`` learns it only as replicas do: the history read with each
recommend, and the change feed (``sync.once``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from app.api.schemas import InteractionIn, RecommendRequest, RecommendResponse
from app.service import RecommendationService
from app.serving.topn import Entry, TopNCache
from app.store.base import UserRead
from tests.app.conftest import StartService, state_of
from tests.app.fakes import MemoryStore

LIST = 20
REQUESTS: list[dict[str, Any]] = [
    {"n": 5},
    {"n": 3, "exclude": ["arts-7", "arts-9", "arts-11"]},
    {"n": 2, "category": "arts|group1"},
]


def _same(a: RecommendResponse, b: RecommendResponse) -> None:
    # every answer has its own recommendation_id; the rest must be the same
    same = {"cached", "recommendation_id"}
    assert a.model_dump(exclude=same) == b.model_dump(exclude=same)


@pytest.fixture(autouse=True)
def _broad_filters(monkeypatch: pytest.MonkeyPatch) -> None:
    # The fake catalogues are tiny: every category filter would be "selective" (scored
    # exactly, never from the cache); this makes a filter of more than 5 items broad.
    monkeypatch.setattr("app.lifecycle.state.FILTER_EXACT_MAX_ITEMS", 5)


def _pair(start: StartService, store: MemoryStore) -> tuple[RecommendationService, ...]:
    cached = start(store, topn_cache_items=LIST, replica_sync_interval_s=0.001)
    live = start(store, topn_cache_items=0, replica_sync_interval_s=0.001)
    return cached, live


def _check(cached: RecommendationService, live: RecommendationService, user: str) -> list[bool]:
    """Every request twice on ``cached`` == ``live``; returns whether each was cached."""
    cached.sync.once()
    flags = []
    for req in REQUESTS * 2:
        got = cached.recommender.recommend(RecommendRequest(domain="arts", user_id=user, **req))
        want = live.recommender.recommend(RecommendRequest(domain="arts", user_id=user, **req))
        assert not want.cached
        _same(got, want)
        flags.append(got.cached)
    return flags


def test_cached_equals_live_through_changes(start: StartService, memory_store: MemoryStore) -> None:
    cached, live = _pair(start, memory_store)
    user = "u-bundle"  # bundle history arts-1, arts-2 (tests/app/fakes.py)
    live.interactions.add([InteractionIn(user_id=user, item_id="arts-4")])
    assert all(_check(cached, live, user))  # the first request fills the entry, serves it
    assert (
        cached.recommender.recommend(
            RecommendRequest(domain="arts", user_id=user, n=5)
        ).history.stored
        == "ok"
    )

    # An interaction posted on the other replica: the history read shows it at once.
    top = (
        cached.recommender.recommend(RecommendRequest(domain="arts", user_id=user, n=1))
        .items[0]
        .item_id
    )
    live.interactions.add([InteractionIn(user_id=user, item_id=top)])
    assert all(_check(cached, live, user))
    assert top not in {
        i.item_id
        for i in cached.recommender.recommend(RecommendRequest(domain="arts", user_id=user)).items
    }

    # Registrations (this domain and another), a replacement and a deletion, each
    # applied by ``cached`` from the change feed.
    live.items.register(item_id="new1", domain="arts", title="t", categories=["arts|group1"])
    _check(cached, live, user)
    live.items.register(item_id="elsewhere", domain="office", title="t")
    _check(cached, live, user)
    live.items.register(
        item_id="new1", replace=True, domain="arts", title="other text", categories=["arts|group1"]
    )
    _check(cached, live, user)
    live.items.delete("new1")
    _check(cached, live, user)

    # Erasure: never served from a cache again, on any replica.
    live.erasure.erase(user)
    flags = _check(cached, live, user)
    assert not any(flags)
    assert not any(k[0] == user for k in cached.recommender.topn._entries)


def test_unaffected_changes_keep_the_entry(start: StartService, memory_store: MemoryStore) -> None:
    cached, live = _pair(start, memory_store)
    live.interactions.add([InteractionIn(user_id="u2", item_id="arts-3")])
    cached.recommender.recommend(RecommendRequest(domain="arts", user_id="u2", n=5))
    live.items.register(item_id="other-domain", domain="office", title="x")
    cached.sync.once()
    got = cached.recommender.recommend(RecommendRequest(domain="arts", user_id="u2", n=5))
    assert got.cached
    _same(got, live.recommender.recommend(RecommendRequest(domain="arts", user_id="u2", n=5)))


def test_requests_the_cache_cannot_answer_are_live(
    start: StartService, memory_store: MemoryStore
) -> None:
    cached, live = _pair(start, memory_store)
    live.interactions.add([InteractionIn(user_id="u3", item_id="arts-5")])
    cases: list[dict[str, Any]] = [
        {"n": LIST + 1},  # more than the list holds
        {"n": 5, "exclude_seen": False},
        {"n": 5, "history": ["arts-8"]},  # inline history changes the embedding
        {"n": 5, "exclude": [f"arts-{k}" for k in range(60)][:LIST]},  # too few left
        {"n": 3, "category": "arts|group2"},
        {"n": 30, "category": "arts|group2"},
    ]
    for req in cases:
        for _ in range(2):
            got = cached.recommender.recommend(RecommendRequest(domain="arts", user_id="u3", **req))
            _same(
                got,
                live.recommender.recommend(RecommendRequest(domain="arts", user_id="u3", **req)),
            )
    assert not cached.recommender.recommend(
        RecommendRequest(domain="arts", user_id="u3", n=LIST + 1)
    ).cached
    assert not cached.recommender.recommend(
        RecommendRequest(domain="arts", history=["arts-5"], n=5)
    ).cached


def test_reload_refreshes_recent_entries(start: StartService, memory_store: MemoryStore) -> None:
    svc = start(memory_store, topn_cache_items=LIST)
    svc.interactions.add([InteractionIn(user_id="u4", item_id="arts-2")])
    before = svc.recommender.recommend(RecommendRequest(domain="arts", user_id="u4", n=5))
    svc.loader.start(None)
    svc.loader.wait(30)
    svc.recommender.topn.wait_refresh(30)
    state = state_of(svc)
    assert len(svc.recommender.topn) == 1
    (entry,) = svc.recommender.topn._entries.values()
    assert entry.generation == state.generation
    after = svc.recommender.recommend(RecommendRequest(domain="arts", user_id="u4", n=5))
    assert after.cached
    _same(before, after)  # same bundle reloaded: same answer


def test_stop_ends_the_refresh_after_the_entry_it_computes(
    start: StartService, memory_store: MemoryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The refresh after a reload stops with the service (a thread left running could be
    killed inside FAISS at interpreter exit) instead of computing every remaining entry."""
    svc = start(memory_store, topn_cache_items=LIST)
    users = ["u5", "u6", "u7"]
    for user in users:
        svc.interactions.add([InteractionIn(user_id=user, item_id="arts-2")])
        svc.recommender.recommend(RecommendRequest(domain="arts", user_id=user, n=5))
    reading, release = threading.Event(), threading.Event()
    reads: list[str] = []
    read_user = memory_store.read_user

    def held(user_id: str, domains: Sequence[str]) -> UserRead:
        if threading.current_thread().name == "micrec-topn":
            reads.append(user_id)
            reading.set()
            release.wait(30)
        return read_user(user_id, domains)

    monkeypatch.setattr(memory_store, "read_user", held)
    svc.loader.start(None)
    assert svc.loader.wait(30).status == "succeeded"
    assert reading.wait(30)  # the refresh is computing its first entry
    stopped = threading.Thread(target=svc.recommender.stop)
    stopped.start()
    while not svc.recommender._stopping.is_set():
        time.sleep(0.001)
    release.set()
    stopped.join(30)
    assert not any(t.name == "micrec-topn" for t in threading.enumerate())
    assert len(reads) == 1  # the other entries were never computed


# --- the cache on its own --------------------------------------------------------------------
class _Registered:
    version = 0


class _State:
    generation = 1
    registered = _Registered()


def _entry(scores: list[float], *, full: bool = True) -> Entry:
    vec = np.array([1.0, 0.0], dtype=np.float32)
    ids = [f"i{k}" for k in range(len(scores))]
    return Entry(1, 7, 0, ids, scores, vec, "inductive", 2, True, full)


@pytest.mark.parametrize(
    ("domain", "item", "vector", "valid"),
    [
        ("d", "new", np.array([0.5, 9.0]), True),  # scores 0.5 < last (0.8): still exact
        ("d", "new", np.array([0.9, 0.0]), False),  # would rank in the list
        ("d", "i1", None, False),  # a listed item deleted
        ("d", "gone", None, True),  # an unlisted item deleted
        ("e", "new", np.array([5.0, 0.0]), True),  # another domain
    ],
)
def test_item_changes_invalidate_only_affected_entries(
    domain: str, item: str, vector: np.ndarray | None, valid: bool
) -> None:
    cache, state = TopNCache(3, 10), _State()
    state.registered = _Registered()
    cache.put("u", "d", _entry([2.0, 1.0, 0.8]))
    state.registered.version = 1
    cache.item_changed(state, domain, item, vector)  # type: ignore[arg-type]
    assert (cache.get(state, "u", "d", 7) is not None) is valid  # type: ignore[arg-type]


def test_unlogged_change_history_changed_or_not_full_invalidates() -> None:
    cache, state = TopNCache(3, 10), _State()
    state.registered = _Registered()
    cache.put("u", "d", _entry([2.0, 1.0, 0.8]))
    assert cache.get(state, "u", "d", 8) is None  # another history
    cache.put("u", "d", _entry([2.0, 1.0, 0.8]))
    state.registered.version = 2  # two changes, one logged
    cache.item_changed(state, "e", "x", None)  # type: ignore[arg-type]
    assert cache.get(state, "u", "d", 7) is None  # type: ignore[arg-type]
    state.registered.version = 0
    cache.put("u", "d", _entry([2.0, 1.0], full=False))
    state.registered.version = 3
    cache.item_changed(state, "d", "low", np.array([-5.0, 0.0]))  # type: ignore[arg-type]
    assert cache.get(state, "u", "d", 7) is None  # type: ignore[arg-type]


def test_size_is_bounded_least_recently_used_first() -> None:
    cache, state = TopNCache(3, 2), _State()
    state.registered = _Registered()
    for user in ("a", "b"):
        cache.put(user, "d", _entry([1.0]))
    assert cache.get(state, "a", "d", 7) is not None  # type: ignore[arg-type]
    cache.put("c", "d", _entry([1.0]))
    assert len(cache) == 2
    assert cache.get(state, "b", "d", 7) is None  # type: ignore[arg-type]
    assert cache.get(state, "a", "d", 7) is not None  # type: ignore[arg-type]
