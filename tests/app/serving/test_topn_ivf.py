"""The top-N cache's exactness with an approximate (IVF) index.

An IVF index fetches candidates by the equivalent L2 distance and re-scores them exactly
(app/index/base.py); the cache's list is fetched with a larger k than a live request's n.
The same checks as tests/app/serving/test_topn.py, on a catalogue big enough to be served by IVF.
"""

from __future__ import annotations

import pytest

from app.api.schemas import InteractionIn
from tests.app.conftest import StartService, state_of
from tests.app.fakes import FakeEngineFactory, MemoryStore
from tests.app.serving.test_topn import LIST, _check

ARTS_ITEMS = 3000


@pytest.fixture
def engine_factory() -> FakeEngineFactory:
    return FakeEngineFactory({"arts": ARTS_ITEMS, "office": 40})


@pytest.fixture(autouse=True)
def _broad_filters(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("app.lifecycle.state.FILTER_EXACT_MAX_ITEMS", 5)


def test_cached_equals_live_with_an_ivf_index(
    start: StartService, memory_store: MemoryStore
) -> None:
    ivf = {"exact_index_max_items": 1000, "ivf_nprobe": 4, "ivf_target_recall": 0.5}
    cached = start(memory_store, topn_cache_items=LIST, **ivf)
    live = start(memory_store, topn_cache_items=0, **ivf)
    for svc in (cached, live):
        index = state_of(svc).indexes["arts"]
        assert index.kind == "ivf" and index.nprobe < index.nlist  # an approximate search
    for user, items in (("u-bundle", ["arts-4"]), ("u-new", ["arts-10", "arts-20", "office-3"])):
        live.interactions.add([InteractionIn(user_id=user, item_id=i) for i in items])
        flags = _check(cached, live, user)
        assert all(flags[len(flags) // 2 :])  # the repeats came from the cache
    live.items.register(item_id="new1", domain="arts", title="t", categories=["arts|group1"])
    _check(cached, live, "u-bundle")
