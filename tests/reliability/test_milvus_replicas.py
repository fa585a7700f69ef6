"""Two service processes (FakeEngine app) on one SQLite store and one milvus-lite server
(``MICREC_INDEX_BACKEND=milvus``) rank from the same shared collection:

* a registration on one replica is in the other's very first recommend after the 201,
  although that replica does not follow the change feed here (sync every 600 s): Milvus
  holds the item, not each replica's memory; a deletion disappears the same way;
* milvus-lite killed (SIGKILL) and restarted while both replicas keep registering:
  every registration answered 201 is then in Milvus and served by both replicas.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from pymilvus import MilvusClient

from bench.milvus_server import MilvusLiteServer
from tests.reliability.conftest import MAX_N
from tests.reliability.procs import AUTH, ServiceProcess, record

BOUND_S = 60.0  # bounds a failure only


def _top(http: httpx.Client, history: list[str], n: int, domain: str = "arts") -> list[str]:
    body = {"history": history, "domain": domain, "exclude_seen": False, "n": n}
    r = http.post("/v1/recommend", json=body, headers=AUTH)
    assert r.status_code == 200, r.text
    return [i["item_id"] for i in r.json()["items"] if i["source"] == "model"]


def _register(http: httpx.Client, item_id: str, title: str) -> int:
    body = {"item_id": item_id, "domain": "arts", "title": title}
    return http.post("/v1/items", json=body, headers=AUTH, timeout=30).status_code


def _pair(
    make_service: Callable[..., ServiceProcess],
    tmp_path: Path,
    server: MilvusLiteServer,
    prefix: str,
    sync_s: str,
) -> tuple[ServiceProcess, ServiceProcess]:
    env = {
        "index_backend": "milvus",
        "milvus_uri": server.uri,
        "milvus_collection_prefix": prefix,
        "milvus_retry_s": "0.2",
        "replica_sync_interval_s": sync_s,
    }
    store = f"sqlite:///{tmp_path / 'state.db'}"
    a = make_service(store, name="milvus-a", **env)
    b = make_service(store, name="milvus-b", **env)
    for svc in (a, b):
        svc.start(wait_ready=False)
    for svc in (a, b):
        svc.wait_ready()
    return a, b


def test_a_registration_is_in_the_other_replicas_first_recommend(
    tmp_path: Path,
    make_service: Callable[..., ServiceProcess],
    milvus_server: MilvusLiteServer,
    milvus_prefix: str,
) -> None:
    a, b = _pair(make_service, tmp_path, milvus_server, milvus_prefix, "600")
    with (
        httpx.Client(base_url=a.url, timeout=10) as ha,
        httpx.Client(base_url=b.url, timeout=10) as hb,
    ):
        shown = 0
        for k in range(6):
            item = f"shared-{k}"
            assert _register(ha if k % 2 == 0 else hb, item, f"a new arts item {k}") == 201
            writer, other = (ha, hb) if k % 2 == 0 else (hb, ha)
            # A history under which the writer ranks the item in its top 10 (it applied
            # the item itself); the other replica's first answer must be the same list.
            for h in range(1, 30):
                top = _top(writer, [f"arts-{h}"], 10)
                if item in top:
                    assert _top(other, [f"arts-{h}"], 10) == top
                    shown += 1
                    break
            assert (ha if k % 2 == 0 else hb).delete(
                f"/v1/items/{item}", headers=AUTH
            ).status_code == 204
            for h in range(1, 30):
                assert item not in _top(other, [f"arts-{h}"], 10)
    assert shown >= 3  # most new items reach some top 10 (the check is not vacuous)
    record("milvus_first_recommend", items=6, shown_in_top10=shown)


@pytest.mark.slow
def test_milvus_restart_under_write_load_loses_no_registration(
    tmp_path: Path,
    make_service: Callable[..., ServiceProcess],
    milvus_server: MilvusLiteServer,
    milvus_prefix: str,
) -> None:
    a, b = _pair(make_service, tmp_path, milvus_server, milvus_prefix, "0.2")
    accepted: list[str] = []
    refused: list[int] = []
    stop = threading.Event()

    def writer(url: str, tag: str) -> None:
        with httpx.Client(base_url=url, timeout=30) as http:
            k = 0
            while not stop.is_set():
                item = f"load-{tag}-{k}"
                status = _register(http, item, f"arts item under load {tag} {k}")
                (accepted.append(item) if status == 201 else refused.append(status))
                k += 1

    threads = [
        threading.Thread(target=writer, args=(svc.url, t)) for svc, t in ((a, "a"), (b, "b"))
    ]
    for t in threads:
        t.start()
    try:
        time.sleep(2.0)
        before = len(accepted)
        milvus_server.stop(hard=True)
        time.sleep(2.0)
        during = len(accepted) - before
        milvus_server.start()
        time.sleep(3.0)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    assert during > 0, "no registration was accepted while Milvus was down"
    assert not refused, refused  # the store is up: every registration is accepted
    want = set(accepted)
    with (
        httpx.Client(base_url=a.url, timeout=30) as ha,
        httpx.Client(base_url=b.url, timeout=30) as hb,
    ):
        deadline = time.monotonic() + BOUND_S
        for http in (ha, hb):
            while True:  # the replicas re-send what Milvus lost before their next search
                r = http.post(
                    "/v1/recommend",
                    json={
                        "history": ["arts-1"],
                        "domain": "arts",
                        "exclude_seen": False,
                        "n": MAX_N,
                    },
                    headers=AUTH,
                )
                if r.status_code == 200 and want <= {i["item_id"] for i in r.json()["items"]}:
                    break
                assert time.monotonic() < deadline, (r.status_code, len(want))
                time.sleep(0.5)
    client = MilvusClient(uri=milvus_server.uri)
    names = [n for n in client.list_collections() if n.startswith(f"{milvus_prefix}_arts_")]
    assert len(names) == 1
    rows = client.get(names[0], ids=sorted(want), output_fields=["item_id"])
    assert {r["item_id"] for r in rows} == want
    record("milvus_restart_under_load", accepted=len(want), accepted_while_down=during)
