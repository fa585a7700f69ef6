"""MilvusDomainIndex (app/index/milvus.py) on a real milvus-lite server (one per session):
the same answers as FAISS exact, one shared collection per (domain, version) that only a
complete fill makes usable, writes every replica sees, outages that lose nothing, pruning."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from app.index.domain import DomainIndex
from app.index.milvus import MilvusDomainIndex
from app.index.milvus_conn import IndexUnavailable, MilvusConfig, MilvusConnection
from bench.milvus_server import MilvusLiteServer

D = 16


def ids_of(n: int, prefix: str = "i") -> list[str]:
    return [f"{prefix}{k}" for k in range(n)]


def config(server: MilvusLiteServer, prefix: str, **kw: object) -> MilvusConfig:
    values: dict = {"uri": server.uri, "prefix": prefix, "timeout_s": 5.0, "retry_s": 0.2}
    values.update(kw)
    return MilvusConfig(**values)


def milvus(server: MilvusLiteServer, prefix: str, **kw: object) -> MilvusDomainIndex:
    return MilvusDomainIndex("books", D, config(server, prefix, **kw))


@pytest.fixture
def data() -> tuple[list[str], np.ndarray]:
    rng = np.random.default_rng(3)
    return ids_of(300), rng.standard_normal((300, D)).astype(np.float32)


def test_search_equals_faiss_exact_with_writes_and_exclusions(
    milvus_server: MilvusLiteServer, milvus_prefix: str, data: tuple[list[str], np.ndarray]
) -> None:
    ids, x = data
    faiss_index = DomainIndex("books", D)
    faiss_index.build(ids, x)
    index = milvus(milvus_server, milvus_prefix)
    index.build(ids, x, source_key="v1")
    rng = np.random.default_rng(4)
    new = rng.standard_normal((3, D)).astype(np.float32) * 3  # long: they rank high
    for idx in (faiss_index, index):
        idx.upsert(["r1", "r2", "r3"], new)
        idx.remove(["r2", "i5"])
    q = rng.standard_normal((4, D)).astype(np.float32)
    exclude = [set(), {"r1", "i7"}, {"nothing"}, set(ids[:50])]
    want = faiss_index.search(q, 20, exclude=exclude)
    got = index.search(q, 20, exclude=exclude)
    for w, g in zip(want, got, strict=True):
        assert [i for i, _ in g] == [i for i, _ in w]
        np.testing.assert_allclose([s for _, s in g], [s for _, s in w], rtol=1e-5, atol=1e-5)
    assert len(index) == len(faiss_index) == 300 - 1 + 2
    assert "r2" not in index and "i5" not in index and "r1" in index
    got_scores = index.score(q[0], ["r1", "i1", "r2"])
    want_scores = faiss_index.score(q[0], ["r1", "i1", "r2"])
    assert [i for i, _ in got_scores] == [i for i, _ in want_scores] == ["r1", "i1"]
    assert [s for _, s in got_scores] == pytest.approx([s for _, s in want_scores], rel=1e-5)
    vec = index.vector("r3")
    assert vec is not None and np.allclose(vec, new[2])


def test_replicas_share_one_collection_and_see_each_others_writes(
    milvus_server: MilvusLiteServer,
    milvus_prefix: str,
    data: tuple[list[str], np.ndarray],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ids, x = data
    fills: list[str] = []
    real_fill = MilvusConnection._fill

    def counting(self: MilvusConnection, name: str, *args: object) -> None:
        fills.append(name)
        real_fill(self, name, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(MilvusConnection, "_fill", counting)
    a, b = milvus(milvus_server, milvus_prefix), milvus(milvus_server, milvus_prefix)
    a.build(ids, x, source_key="v1")
    b.build(ids, x, source_key="v1")
    assert len(fills) == 1 and a.collection == b.collection
    v = np.full((1, D), 5.0, dtype=np.float32)
    a.upsert(["new"], v)  # B's feed has not applied it: B's search still finds it
    assert b.search(v, 1)[0][0][0] == "new"
    a.remove(["new"])
    assert "new" not in [i for i, _ in b.search(v, 5)[0]]
    c = milvus(milvus_server, milvus_prefix)
    c.build(ids, x, source_key="v2")  # another bundle version: its own collection
    assert c.collection != a.collection and len(fills) == 2


def test_a_half_filled_collection_is_refilled_not_served(
    milvus_server: MilvusLiteServer, milvus_prefix: str, data: tuple[list[str], np.ndarray]
) -> None:
    """A filler that died mid-way left rows and a 'filling' claim: a replica waits for the
    claim to go stale, takes it over and serves only once every row is in."""
    ids, x = data
    cfg = config(milvus_server, milvus_prefix, fill_wait_s=1.0)
    dead = MilvusConnection(cfg)
    dead.owner = "a-replica-that-died"
    dead._ensure_meta()
    index = MilvusDomainIndex("books", D, cfg)
    name = _name_of(index, ids, x, "v1")
    dead._meta_put(name, "books", "filling", len(ids))
    dead._create(name, D)
    dead.call("partial fill", lambda c: c.upsert(name, [_row(ids[0], x[0])]))
    index.build(ids, x, source_key="v1")
    # the stale claim was taken over (not served half-filled): the meta row is now this
    # replica's and complete
    row = index.conn._meta_row(name)
    assert row is not None and row["state"] == "complete"
    assert row["owner"] == index.conn.owner != "a-replica-that-died"
    assert index.search(x[100], 1)[0][0][0] == "i100"
    stats = index.conn.call("count", lambda c: c.get_collection_stats(name))
    assert stats["row_count"] == len(ids)


def test_outage_keeps_writes_and_fails_fast(
    milvus_server: MilvusLiteServer, milvus_prefix: str, data: tuple[list[str], np.ndarray]
) -> None:
    ids, x = data
    index = milvus(milvus_server, milvus_prefix)
    index.build(ids, x, source_key="v1")
    v = np.full((1, D), 5.0, dtype=np.float32)
    milvus_server.stop(hard=True)
    try:
        index.upsert(["during"], v)  # the store has it: the index keeps it pending
        assert index.pending == 1 and "during" in index
        with pytest.raises(IndexUnavailable, match="Milvus"):
            index.search(v, 3)
    finally:
        milvus_server.start()
    deadline = time.monotonic() + 30
    while True:
        try:
            hits = index.search(v, 3)[0]
            break
        except IndexUnavailable:
            assert time.monotonic() < deadline
            time.sleep(0.2)
    assert hits[0][0] == "during" and index.pending == 0


def test_a_replay_sends_its_writes_together(
    milvus_server: MilvusLiteServer,
    milvus_prefix: str,
    data: tuple[list[str], np.ndarray],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The feed's replay of every registered item into a new state (app/lifecycle/feed.py)
    costs one upsert per insert_batch rows, not one round trip per item."""
    ids, x = data
    index = milvus(milvus_server, milvus_prefix, insert_batch=40)
    index.build(ids, x, source_key="v1")
    calls: list[str] = []
    real = MilvusConnection.loaded_call

    def counting(self: MilvusConnection, name: str, what: str, fn: object) -> object:
        calls.append(what)
        return real(self, name, what, fn)  # type: ignore[arg-type]

    monkeypatch.setattr(MilvusConnection, "loaded_call", counting)
    new = np.random.default_rng(5).standard_normal((100, D)).astype(np.float32)
    with index.deferred():
        for k in range(100):
            index.upsert([f"replayed{k}"], new[k : k + 1])
    assert calls.count("register") == 3  # 100 rows in batches of 40
    assert index.search(new[7], 1)[0][0][0] == "replayed7"


def test_hnsw_and_a_milvus_lite_file(
    tmp_path: Path,
    milvus_server: MilvusLiteServer,
    milvus_prefix: str,
    data: tuple[list[str], np.ndarray],
) -> None:
    """milvus_index=HNSW builds and finds the exact neighbours of a small catalogue; a
    ``.db`` URI runs milvus-lite inside the process (one worker)."""
    ids, x = data
    exact = DomainIndex("books", D)
    exact.build(ids, x)
    hnsw = milvus(milvus_server, milvus_prefix, index="HNSW")
    hnsw.build(ids, x, source_key="v1")
    assert hnsw.kind == "milvus-hnsw"
    q = np.random.default_rng(6).standard_normal((5, D)).astype(np.float32)
    want = [{i for i, _ in row} for row in exact.search(q, 10)]
    got = [{i for i, _ in row} for row in hnsw.search(q, 10)]
    assert sum(len(w & g) for w, g in zip(want, got, strict=True)) >= 0.9 * 50
    local = MilvusDomainIndex("books", D, MilvusConfig(uri=str(tmp_path / "lite.db")))
    local.build(ids, x, source_key="v1")
    assert local.search(x[3], 1)[0][0][0] == "i3"


def test_older_versions_are_pruned(
    milvus_server: MilvusLiteServer, milvus_prefix: str, data: tuple[list[str], np.ndarray]
) -> None:
    ids, x = data
    built = []
    for version in ("v1", "v2", "v3"):
        index = milvus(milvus_server, milvus_prefix, keep_versions=2)
        index.build(ids, x, source_key=version)
        built.append(index.collection)
        time.sleep(0.01)  # distinct "last used" times
    names = index.conn.call("list", lambda c: c.list_collections())
    assert built[0] not in names and built[1] in names and built[2] in names


def _name_of(index: MilvusDomainIndex, ids: list[str], x: np.ndarray, key: str) -> str:
    import json

    from app.index.milvus_conn import collection_name

    doc = json.dumps({"source": key, "dim": D} | {"index": "FLAT"}, sort_keys=True)
    return collection_name(index.config.prefix, "books", f"{doc}\0FLAT")


def _row(item_id: str, v: np.ndarray) -> dict:
    return {"item_id": item_id, "vector": v, "registered": False}


def test_after_a_failure_calls_fail_fast_without_reaching_milvus() -> None:
    """A request during an outage never waits for a deadline of its own: for retry_s
    after a failure, calls are refused before reaching Milvus (no hung model thread)."""
    conn = MilvusConnection(MilvusConfig(uri="http://127.0.0.1:9", timeout_s=1.0, retry_s=60))
    conn._client = object()  # a client that exists: what is checked is the call's gate

    def failing(client: object) -> None:
        raise ConnectionError("refused")

    with pytest.raises(IndexUnavailable, match="Milvus"):
        conn.call("search", failing)
    reached: list[int] = []
    with pytest.raises(IndexUnavailable, match=r"unavailable \(search: ConnectionError\)"):
        conn.call("search", lambda client: reached.append(1))
    assert reached == []


def test_a_grpc_deadline_is_named_in_one_line() -> None:
    import grpc

    class Deadline(grpc.RpcError):
        def code(self) -> grpc.StatusCode:
            return grpc.StatusCode.DEADLINE_EXCEEDED

    conn = MilvusConnection(MilvusConfig(uri="http://127.0.0.1:9"))
    conn._client = object()

    def late(client: object) -> None:
        raise Deadline()

    with pytest.raises(IndexUnavailable) as err:
        conn.call("search", late)
    assert "(search: Deadline code DEADLINE_EXCEEDED)" in str(err.value)
