"""``index_backend=milvus`` through the service (app/lifecycle/state.py build_domain_index):
the same rankings as FAISS (fake engine here; a real trained bundle below), registrations
served, a Milvus outage answered with a 503 naming Milvus (never a 500 or a hang) while
requests that never needed the index keep their fallback answer, and nothing registered
during the outage is lost."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from app.index.domain import DomainIndex
from app.index.milvus import MilvusDomainIndex
from app.lifecycle.engine import load_engine
from app.lifecycle.state import build_domain_index
from app.settings import Settings
from bench.milvus_server import MilvusLiteServer
from tests.app.conftest import AUTH, running
from tests.app.fakes import FakeEngineFactory, MemoryStore

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


def _demo_bundle() -> Path | None:
    for candidate in (os.environ.get("MICREC_TEST_DEMO_BUNDLE"), REPO / "artifacts/demo-bundle"):
        if candidate and (Path(candidate) / "manifest.json").is_file():
            return Path(candidate)
    return None


def _same_ranking(
    want: list[tuple[str, float]], got: list[tuple[str, float]], exact: DomainIndex, q: np.ndarray
) -> None:
    """Equal ids rank by rank, except within ties (scores within 1e-4), which may come in
    any order; at the cut, a tied id of the other list must score the same."""
    assert len(got) == len(want)
    np.testing.assert_allclose([s for _, s in got], [s for _, s in want], rtol=1e-5, atol=1e-5)
    tol, start = 1e-4, 0
    while start < len(want):
        end = start
        while end + 1 < len(want) and abs(want[end + 1][1] - want[start][1]) < tol:
            end += 1
        group_w = {i for i, _ in want[start : end + 1]}
        group_g = {i for i, _ in got[start : end + 1]}
        if end + 1 < len(want):
            assert group_g == group_w
        else:  # the last group may continue past the cut: any tied id will do
            for _, score in exact.score(q, sorted(group_g)):
                assert abs(score - want[start][1]) < tol
        start = end + 1


def test_milvus_flat_top20_equals_faiss_on_a_real_bundle(
    tmp_path: Path, milvus_server: MilvusLiteServer, milvus_prefix: str
) -> None:
    """The parity test of issue 24: the demo bundle's serving vectors (the blend's
    augmented vectors) in FAISS exact and in Milvus FLAT, real bundle users' vectors."""
    source = _demo_bundle()
    if source is None:
        pytest.skip("no demo bundle (make demo-bundle, or MICREC_TEST_DEMO_BUNDLE=DIR)")
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
        assert isinstance(exact, DomainIndex) and exact.kind == "flat"
        assert isinstance(shared, MilvusDomainIndex)
        users = engine.sample_user_vectors(domain, 25)
        assert len(users) > 0
        seen = [set(engine.catalogue(domain).item_ids[k::97]) for k in range(len(users))]
        for excl in (None, seen):
            want = exact.search(users, TOP, exclude=excl)
            got = shared.search(users, TOP, exclude=excl)
            for q, w, g in zip(users, want, got, strict=True):
                _same_ranking(w, g, exact, q)
                compared += 1
    assert compared >= 2 * 25
