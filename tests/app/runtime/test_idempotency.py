"""IdempotencyGuard and KeyedRequest (app/runtime/idempotency.py) without HTTP, on the test store
(the stores themselves: tests/app/store/test_store_contract.py; over HTTP:
tests/app/http/routers/test_interactions.py and test_items.py)."""

from __future__ import annotations

import threading

import pytest
from pydantic import BaseModel

from app.api.errors import Conflict, InvalidInput, Unavailable
from app.runtime.idempotency import IdempotencyGuard, KeyedRequest
from app.runtime.store_health import StoreHealth
from app.runtime.telemetry import Metrics
from tests.app.fakes import FlakyStore, MemoryStore


class Out(BaseModel):
    n: int


def keyed(
    key: str = "k-1", body: bytes = b'{"a": 1}', api_key: str | None = "key-a"
) -> KeyedRequest:
    return KeyedRequest.of(key, method="POST", path="/v1/interactions", body=body, api_key=api_key)


class Counter:
    """A write that counts how often it really ran."""

    def __init__(self, status: int = 201) -> None:
        self.runs = 0
        self.status = status

    def __call__(self) -> tuple[int, BaseModel]:
        self.runs += 1
        return self.status, Out(n=self.runs)


def guard(store: MemoryStore | FlakyStore | None = None, ttl_s: float = 60) -> IdempotencyGuard:
    store = store or MemoryStore()
    return IdempotencyGuard(store, StoreHealth(store, Metrics(), 3), ttl_s)


def test_retry_replays_the_first_answer_without_running_again() -> None:
    g, write = guard(), Counter(status=207)
    first = g.run(keyed(), write)
    again = g.run(keyed(), write)
    assert write.runs == 1
    assert (first.status, first.body, first.replayed) == (207, b'{"n":1}', False)
    assert (again.status, again.body, again.replayed) == (207, b'{"n":1}', True)


def test_same_key_other_request_is_422() -> None:
    g, write = guard(), Counter()
    g.run(keyed(body=b"one"), write)
    for other in (
        keyed(body=b"two"),
        KeyedRequest.of("k-1", method="POST", path="/v1/items", body=b"one", api_key="key-a"),
    ):
        with pytest.raises(InvalidInput, match="already used for another request"):
            g.run(other, write)
    assert write.runs == 1


def test_key_in_flight_is_409() -> None:
    g = guard()
    inside, leave = threading.Event(), threading.Event()
    outcome: list[BaseException] = []

    def slow() -> tuple[int, BaseModel]:
        inside.set()
        leave.wait(10)
        return 200, Out(n=0)

    t = threading.Thread(target=lambda: g.run(keyed(), slow))
    t.start()
    assert inside.wait(10)
    try:
        g.run(keyed(), Counter())
    except Conflict as err:
        outcome.append(err)
    leave.set()
    t.join()
    assert len(outcome) == 1 and "still being processed" in outcome[0].detail
    assert outcome[0].headers == {"Retry-After": "1"}
    assert g.run(keyed(), Counter()).replayed  # once answered, a retry is a replay


def test_failed_write_releases_the_key() -> None:
    g, write = guard(), Counter()

    def failing() -> tuple[int, BaseModel]:
        raise Unavailable("store down")

    with pytest.raises(Unavailable):
        g.run(keyed(), failing)
    answer = g.run(keyed(), write)  # nothing was applied: the retry runs
    assert write.runs == 1 and not answer.replayed


def test_keys_are_per_api_key() -> None:
    g, write = guard(), Counter()
    g.run(keyed(api_key="key-a"), write)
    other_client = g.run(keyed(api_key="key-b", body=b"different"), write)
    assert write.runs == 2 and not other_client.replayed
    assert keyed(api_key="key-a").key != keyed(api_key="key-b").key
    assert "key-a" not in keyed(api_key="key-a").key  # the API key is hashed


def test_answers_expire_after_the_ttl() -> None:
    g, write = guard(ttl_s=0.2), Counter()
    g.run(keyed(), write)
    threading.Event().wait(0.4)
    assert not g.run(keyed(), write).replayed and write.runs == 2


def test_store_down_before_the_claim_is_503_not_saved() -> None:
    flaky = FlakyStore(MemoryStore())
    g, write = guard(flaky), Counter()
    flaky.down = True
    with pytest.raises(Unavailable, match="not saved"):
        g.run(keyed(), write)
    assert write.runs == 0


@pytest.mark.parametrize(
    "key",
    ["", "x" * 256, "caf\u00e9", "tab\there", "nl\nx", "\x7f"],
    ids=["empty", "256-chars", "non-ascii", "tab", "newline", "del"],
)
def test_key_format_is_checked(key: str) -> None:
    with pytest.raises(InvalidInput, match="1 to 255 printable ASCII"):
        keyed(key)


def test_longest_and_odd_printable_keys_are_fine() -> None:
    seen = set()
    for key in ("x" * 255, " ", "a b:~!{}", "550e8400-e29b-41d4-a716-446655440000"):
        stored = keyed(key).key
        seen.add(stored)
        # the store gets a hash of the client's key: it may hold ids (issue 22)
        assert key not in stored and len(stored.split(":")[1]) == 32
    assert len(seen) == 4
