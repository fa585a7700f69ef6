"""App-level behaviour: body limit, error mapping, unknown routes, OpenAPI, CORS."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient

from app.settings import Settings
from tests.app.conftest import AUTH, running, service_of
from tests.app.fakes import FakeEngineFactory, MemoryStore


@pytest.fixture
def small_body_client(
    make_settings: Callable[..., Settings], engine_factory: FakeEngineFactory
) -> Iterator[TestClient]:
    with running(make_settings(max_body_bytes=2048), engine_factory, MemoryStore()) as c:
        yield c


def test_body_over_limit_by_content_length(small_body_client: TestClient) -> None:
    big = {"item_id": "x", "domain": "arts", "description": "d" * 5000}
    r = small_body_client.post("/v1/items", json=big, headers=AUTH)
    assert r.status_code == 413 and "max_body_bytes=2048" in r.json()["detail"]
    rows = [{"user_id": "u", "item_id": "arts-1"}] * 100
    r = small_body_client.post("/v1/interactions", json={"interactions": rows}, headers=AUTH)
    assert r.status_code == 413


def test_body_over_limit_streamed_without_length(small_body_client: TestClient) -> None:
    payload = json.dumps({"domain": "arts", "history": ["arts-1"] * 600}).encode()

    def chunks() -> Iterator[bytes]:  # a generator body is sent chunked, no Content-Length
        for k in range(0, len(payload), 512):
            yield payload[k : k + 512]

    r = small_body_client.post(
        "/v1/recommend", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 413 and "max_body_bytes" in r.json()["detail"]
    files = {"image": ("a.bin", b"x" * 5000, "application/octet-stream")}
    r = small_body_client.post(
        "/v1/items", data={"item_id": "x", "domain": "arts"}, files=files, headers=AUTH
    )
    assert r.status_code == 413


def test_unknown_route_and_method_are_json(client: TestClient) -> None:
    r = client.get("/v1/nothing")
    assert r.status_code == 404 and r.json() == {"detail": "Not Found"}
    r = client.delete("/v1/recommend")
    assert r.status_code == 405 and "detail" in r.json()


def test_genuine_bug_is_a_logged_500(
    make_settings: Callable[..., Settings], engine_factory: FakeEngineFactory
) -> None:
    from app.http.main import create_app

    app = create_app(make_settings(), engine_factory=engine_factory, store=MemoryStore())
    with TestClient(app, raise_server_exceptions=False) as c:
        svc = service_of(c)
        assert svc.wait_ready(30)

        async def boom(**_: object) -> None:
            raise RuntimeError("bug")

        svc.recommender.recommend_async = boom  # type: ignore[method-assign,assignment]
        r = c.post("/v1/recommend", json={"domain": "arts"})
        assert r.status_code == 500 and r.json() == {"detail": "internal server error"}


def test_openapi_has_examples_and_both_item_content_types(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    for path in (
        "/v1/recommend",
        "/v1/users/{user_id}/recommendations",
        "/v1/interactions",
        "/v1/items",
        "/v1/items/{item_id}",
        "/v1/items/{item_id}/similar",
        "/v1/model",
        "/v1/admin/reload",
        "/healthz",
        "/readyz",
        "/metrics",
    ):
        assert path in paths, path
    body = paths["/v1/items"]["post"]["requestBody"]["content"]
    assert set(body) == {"application/json", "multipart/form-data"}
    assert "image" in body["multipart/form-data"]["schema"]["properties"]
    schemas = spec["components"]["schemas"]
    assert schemas["RecommendRequest"]["examples"]
    assert schemas["RecommendResponse"]["examples"]
    assert "422" in paths["/v1/recommend"]["post"]["responses"]


def test_api_doc_pages_are_off_by_default_and_carry_a_csp_when_on(
    make_settings: Callable[..., Settings], engine_factory: FakeEngineFactory
) -> None:
    """/docs and /redoc run a CDN's scripts on the service's origin: off unless
    ``api_docs``; when on, a CSP limits scripts to that CDN and the page's own inline
    script (by hash). The schema is served either way."""
    with running(make_settings(), engine_factory, MemoryStore()) as c:
        assert c.get("/docs").status_code == 404 and c.get("/redoc").status_code == 404
        assert c.get("/openapi.json").status_code == 200
        assert 'href="/docs"' not in c.get("/ui/").text  # the console links the schema
    with running(make_settings(api_docs=True), engine_factory, MemoryStore()) as c:
        for path in ("/docs", "/redoc"):
            r = c.get(path)
            assert r.status_code == 200 and "cdn.jsdelivr.net" in r.text
            csp = dict(
                d.strip().split(" ", 1) for d in r.headers["content-security-policy"].split(";")
            )
            assert csp["default-src"] == "'none'" and csp["frame-ancestors"] == "'none'"
            assert csp["connect-src"] == "'self'"
            sources = csp["script-src"].split()
            assert sources[0] == "https://cdn.jsdelivr.net"
            assert "'unsafe-inline'" not in sources and "*" not in sources
        inline = r"const ui = SwaggerUIBundle"
        docs = c.get("/docs")
        assert inline in docs.text and "'sha256-" in docs.headers["content-security-policy"]
        assert 'href="/docs"' in c.get("/ui/").text
        assert "/docs" not in c.get("/openapi.json").json()["paths"]


def test_cors_when_configured(
    make_settings: Callable[..., Settings], engine_factory: FakeEngineFactory
) -> None:
    settings = make_settings(cors_origins=["https://shop.example"])
    with running(settings, engine_factory, MemoryStore()) as c:
        r = c.options(
            "/v1/recommend",
            headers={"Origin": "https://shop.example", "Access-Control-Request-Method": "POST"},
        )
        assert r.headers["access-control-allow-origin"] == "https://shop.example"
        r = c.get("/healthz", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in r.headers


def test_request_threads_bound_the_worker_threads(
    make_settings: Callable[..., Settings],
    engine_factory: FakeEngineFactory,
    memory_store: MemoryStore,
) -> None:
    """Sync handlers run on anyio's thread pool; its size comes from the settings."""
    import anyio.to_thread

    def tokens() -> float:
        return anyio.to_thread.current_default_thread_limiter().total_tokens

    with running(make_settings(request_threads=3), engine_factory, memory_store) as client:
        assert client.portal is not None
        assert client.portal.call(tokens) == 3
        assert client.get("/healthz").status_code == 200


def test_gil_switch_interval_is_set_at_start(
    make_settings: Callable[..., Settings],
    engine_factory: FakeEngineFactory,
    memory_store: MemoryStore,
) -> None:
    before = sys.getswitchinterval()
    try:
        settings = make_settings(gil_switch_interval_ms=0.5)
        with running(settings, engine_factory, memory_store):
            assert sys.getswitchinterval() == pytest.approx(0.0005)
    finally:
        sys.setswitchinterval(before)


def test_serving_cache_policy_is_set_at_start(
    make_settings: Callable[..., Settings],
    engine_factory: FakeEngineFactory,
    memory_store: MemoryStore,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from model import serving_cache

    monkeypatch.setattr(serving_cache, "_policy", serving_cache.CachePolicy())  # restored
    settings = make_settings(
        serving_cache_verify="full", serving_cache_keep=2, serving_cache_unused_s=60
    )
    with running(settings, engine_factory, memory_store):
        assert serving_cache.current_policy() == serving_cache.CachePolicy("full", 2, 60)


def test_registrations_do_not_queue_behind_request_threads(
    make_settings: Callable[..., Settings],
    engine_factory: FakeEngineFactory,
    memory_store: MemoryStore,
) -> None:
    """With every request thread busy, an item registration still runs: it has its own
    threads (registration_threads)."""
    import anyio.to_thread

    release = threading.Event()
    settings = make_settings(request_threads=1, registration_threads=1)
    with running(settings, engine_factory, memory_store) as client:
        assert client.portal is not None
        busy = client.portal.start_task_soon(anyio.to_thread.run_sync, release.wait)
        try:
            statuses: list[int] = []

            def register() -> None:
                body = {"item_id": "while-busy", "domain": "arts", "title": "a new mug"}
                statuses.append(client.post("/v1/items", json=body, headers=AUTH).status_code)

            worker = threading.Thread(target=register)
            worker.start()
            worker.join(20)
            assert statuses == [201]
        finally:
            release.set()
            busy.result(20)
