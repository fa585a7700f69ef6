"""``index_backend=milvus`` through the service (app/lifecycle/state.py build_domain_index):
the same rankings as FAISS (fake engine here; a real trained bundle below), registrations
served, a Milvus outage answered with a 503 naming Milvus (never a 500 or a hang) while
requests that never needed the index keep their fallback answer, and nothing registered
during the outage is lost."""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pymilvus import MilvusClient

from app.lifecycle.engine import load_engine
from app.lifecycle.state import build_domain_index
from app.settings import Settings
from bench.milvus_server import MilvusLiteServer
from tests.app.conftest import ADMIN, AUTH, running, service_of
from tests.app.fakes import FakeEngineFactory, MemoryStore
from tests.app.milvus_parity import assert_same_top

REPO = Path(__file__).resolve().parents[3]
TOP = 20


def _recommend(client: Any, **body: Any) -> Any:
    return client.post("/v1/recommend", json=body, headers=AUTH)


def test_milvus_app_answers_as_faiss_and_survives_an_outage(
    make_settings: Callable[..., Settings],
    engine_factory: FakeEngineFactory,
    milvus_server: MilvusLiteServer,
    milvus_prefix: str,
) -> None:
    milvus = {
        "index_backend": "milvus",
        "milvus_uri": milvus_server.uri,
        "milvus_collection_prefix": milvus_prefix,
        "milvus_retry_s": 0.2,
    }
    body = {"history": ["arts-1", "arts-2"], "domain": "arts", "n": TOP}
    filtered = body | {"category": "group1"}
    with running(make_settings(), engine_factory, MemoryStore()) as client:
        want = _recommend(client, **body).json()["items"]
        want_filtered = _recommend(client, **filtered).json()["items"]
    with running(make_settings(**milvus), engine_factory, MemoryStore()) as client:
        info = client.get("/v1/model", headers=AUTH).json()
        assert info["indexes"]["arts"]["kind"] == "milvus-flat"
        got = _recommend(client, **body).json()["items"]
        assert [i["item_id"] for i in got] == [i["item_id"] for i in want]
        assert [i["score"] for i in got] == pytest.approx([i["score"] for i in want], rel=1e-5)
        got_filtered = _recommend(client, **filtered).json()["items"]
        assert [i["item_id"] for i in got_filtered] == [i["item_id"] for i in want_filtered]

        milvus_server.stop(hard=True)
        try:
            r = _recommend(client, **body)
            assert r.status_code == 503 and "Milvus" in r.json()["detail"], r.text
            assert r.headers["Retry-After"]
            ready = client.get("/readyz").json()
            assert ready["status"] == "degraded" and "Milvus" in " ".join(ready["degraded"])
            # No usable history: the fallback chain answers without the index, as before.
            cold = _recommend(client, domain="arts", n=5)
            assert cold.status_code == 200 and cold.json()["user_embedding"] == "fallback"
            # A registration during the outage: durable in the store, 201, kept pending.
            reg = client.post(
                "/v1/items",
                json={"item_id": "during", "domain": "arts", "title": "new arts item"},
                headers=AUTH,
            )
            assert reg.status_code == 201, reg.text
        finally:
            milvus_server.start()
        deadline = time.monotonic() + 30
        while (
            r := _recommend(client, history=["during"], domain="arts", n=2000, exclude_seen=False)
        ).status_code != 200:
            assert r.status_code == 503 and time.monotonic() < deadline, r.text
            time.sleep(0.2)
        assert "during" in [i["item_id"] for i in r.json()["items"]]
        assert client.get("/readyz").json()["status"] == "ready"


def _demo_bundle() -> Path | None:
    for candidate in (os.environ.get("PARITY_DEMO_BUNDLE"), REPO / "artifacts/demo-bundle"):
        if candidate and (Path(candidate) / "manifest.json").is_file():
            return Path(candidate)
    return None


def test_milvus_flat_top20_equals_faiss_on_a_real_bundle(
    tmp_path: Path, milvus_server: MilvusLiteServer, milvus_prefix: str
) -> None:
    """The parity test of issue 24: the demo bundle's serving vectors (the blend's
    augmented vectors) in FAISS exact and in Milvus FLAT, real bundle users' vectors."""
    source = _demo_bundle()
    if source is None:
        pytest.skip("no demo bundle (make demo-bundle, or PARITY_DEMO_BUNDLE=DIR)")
    bundle = tmp_path / "bundle"
    shutil.copytree(source, bundle, ignore=shutil.ignore_patterns("serving-cache"))
    engine = load_engine(bundle)
    base: dict[str, Any] = {"bundle_path": bundle, "serving_cache_dir": tmp_path / "cache"}
    faiss_settings = Settings(**base)
    milvus_settings = Settings(
        **base,
        index_backend="milvus",
        milvus_uri=milvus_server.uri,
        milvus_collection_prefix=milvus_prefix,
    )
    compared = 0
    for domain in engine.domains:
        exact = build_domain_index(engine, domain, faiss_settings, bundle)
        shared = build_domain_index(engine, domain, milvus_settings, bundle)
        compared += assert_same_top(engine, domain, exact, shared, TOP)
    assert compared >= 2 * 25


def test_a_new_version_is_filled_before_the_swap_and_the_old_one_kept(
    tmp_path: Path,
    make_settings: Callable[..., Settings],
    engine_factory: FakeEngineFactory,
    milvus_server: MilvusLiteServer,
    milvus_prefix: str,
) -> None:
    """A reload to another bundle version (what a promotion does on every replica) fills
    the new version's collection while the old one answers every request; the old
    collection stays for replicas still on it (milvus_keep_versions=2); the registered
    item is in the new collection too."""
    bigger = FakeEngineFactory()
    bigger.domains = {**bigger.domains, "arts": bigger.domains["arts"] + 7}  # other content
    v2 = bigger.make_bundle(tmp_path / "bundle-v2", version="fake-v2")
    settings = make_settings(
        index_backend="milvus",
        milvus_uri=milvus_server.uri,
        milvus_collection_prefix=milvus_prefix,
        bundles_dir=tmp_path,
    )
    body = {"history": ["arts-1", "new-arts"], "domain": "arts", "n": 5}
    with running(settings, engine_factory, MemoryStore()) as client:
        item = {"item_id": "new-arts", "domain": "arts", "title": "registered before"}
        assert client.post("/v1/items", json=item, headers=AUTH).status_code == 201
        statuses: list[int] = []
        versions: set[str] = set()
        stop = threading.Event()

        def hammer() -> None:
            while not stop.is_set():
                r = _recommend(client, **body)
                statuses.append(r.status_code)
                if r.status_code == 200:
                    versions.add(r.json()["model_version"])

        thread = threading.Thread(target=hammer)
        thread.start()
        try:
            r = client.post("/v1/admin/reload", json={"bundle_path": str(v2)}, headers=ADMIN)
            assert r.status_code == 202, r.text
            assert service_of(client).loader.wait(120).status == "succeeded"
            deadline = time.monotonic() + 60
            while "fake-v2" not in versions:
                assert time.monotonic() < deadline
                time.sleep(0.01)
        finally:
            stop.set()
            thread.join(60)
        assert set(statuses) == {200} and versions == {"fake-v1", "fake-v2"}
        ranked = _recommend(client, history=["new-arts"], domain="arts", n=2000, exclude_seen=False)
        assert "new-arts" in [i["item_id"] for i in ranked.json()["items"]]
    client_m = MilvusClient(uri=milvus_server.uri)
    arts = [n for n in client_m.list_collections() if n.startswith(f"{milvus_prefix}_arts_")]
    assert len(arts) == 2
