"""The recorder without HTTP: ids, the queue written by the loop (and at its stop), records
dropped and counted when the store is down or the user was erased meanwhile."""

from __future__ import annotations

import threading
import time

from app.api.schemas import HistoryReport, RecommendedItem, RecommendResponse
from app.feedback.recording import RecommendationRecorder
from app.runtime.store_health import StoreHealth
from app.runtime.telemetry import Metrics
from app.settings import Settings
from tests.app.fakes import FlakyStore, MemoryStore


def answer() -> RecommendResponse:
    items = [RecommendedItem(item_id=f"a{k}", score=1.0, source="model") for k in range(3)]
    return RecommendResponse(
        domain="arts",
        n=3,
        model_version="v1",
        user_embedding="inductive",
        items=items,
        history=HistoryReport(stored="ok", known_user=True, items_used=1),
    )


def recorder(store: FlakyStore, **settings: object) -> tuple[RecommendationRecorder, Metrics]:
    metrics = Metrics()
    s = Settings.model_validate({"record_flush_s": 60, **settings})
    return RecommendationRecorder(s, store, metrics, StoreHealth(store, metrics, 5)), metrics


def dropped(metrics: Metrics, reason: str) -> float:
    return metrics.records_dropped.labels(reason)._value.get()


def test_the_loop_writes_what_is_queued_when_it_stops() -> None:
    store = FlakyStore(MemoryStore())
    rec, metrics = recorder(store)
    stop = threading.Event()
    thread = threading.Thread(target=rec.loop, args=(stop,))
    thread.start()
    answers = [answer() for _ in range(3)]
    for a in answers:
        rec.record(a, user_id="u1", session_id="ignored", catalogue_size=9)
    stop.set()
    thread.join(10)
    assert rec.waiting == 0
    found = store.get_recommendation(answers[0].recommendation_id or "")
    assert found is not None
    r = found.record
    assert (r.user_id, r.session_id, r.version, r.catalogue_size) == ("u1", None, "v1", 9)
    assert r.items == (("a0", "model"), ("a1", "model"), ("a2", "model"))
    assert metrics.records.labels("v1", "arts")._value.get() == 3


def test_records_lost_to_a_store_outage_or_an_erasure_are_counted() -> None:
    store = FlakyStore(MemoryStore())
    rec, metrics = recorder(store)
    rec.record(answer(), user_id=None, session_id="s", catalogue_size=9)
    store.down = True
    assert rec.flush() == 0 and rec.waiting == 0
    assert dropped(metrics, "store") == 1
    store.down = False
    a = answer()
    rec.record(a, user_id="u1", session_id=None, catalogue_size=9)
    store.erase_user("u1", time.time() + 1)  # erased after the list was served
    assert rec.flush() == 0
    assert dropped(metrics, "erased") == 1
    assert store.get_recommendation(a.recommendation_id or "") is None


def test_off_means_no_id_and_nothing_queued() -> None:
    rec, _ = recorder(FlakyStore(MemoryStore()), record_recommendations=False)
    a = answer()
    rec.record(a, user_id="u1", session_id=None, catalogue_size=9)
    assert a.recommendation_id is None and rec.waiting == 0
