"""What one worker accepts (app/http/connections.py), through the uvicorn options ``micrec serve``
passes, on a real uvicorn server on loopback.

Each test runs ``micrec serve`` with ``uvicorn.run`` captured, then serves the app with
exactly those options in a thread: the protocol (``NoDelayHTTPProtocol``), its settings
from the environment ``run`` sets, and the limits. No timing assertions: socket timeouts
only bound a failing test.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio.to_thread
import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from app.cli import main
from app.http.main import create_app
from app.settings import Settings
from tests.app.fakes import FakeEngineFactory, MemoryStore, wait_until

ATTACKER = "127.0.0.2"
"""Another loopback address (Linux routes all of 127/8 to lo): a second client."""
PARTIAL = b"POST /v1/recommend HTTP/1.1\r\nHost: x\r\n"
PROTOCOL_ENV = (
    "MICREC_HEADER_TIMEOUT_S",
    "MICREC_MAX_CONNECTIONS",
    "MICREC_MAX_PENDING_PER_CLIENT",
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("MICREC_") and key != "MICREC_THREADS":
            monkeypatch.delenv(key)
    for key in PROTOCOL_ENV:  # run() sets these for its workers: restored after the test
        monkeypatch.setenv(key, "0")
        monkeypatch.delenv(key)


@contextmanager
def served_like_micrec(
    app: FastAPI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **env: str
) -> Iterator[tuple[str, uvicorn.Server]]:
    """``app`` served by uvicorn with the options ``micrec serve`` (with ``MICREC_<env>``)
    hands ``uvicorn.run``; yields the base URL and the server."""
    for key, value in {"ENCODER_PROCESS": "false", "LOG_LEVEL": "warning", **env}.items():
        monkeypatch.setenv(f"MICREC_{key.upper()}", value)
    bundle = tmp_path / "serve-bundle"
    bundle.mkdir()
    (bundle / "manifest.json").write_text("{}")
    seen: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda *a, **kw: seen.update(kw))
    assert main(["serve", "--bundle", str(bundle)]) == 0
    options = {k: v for k, v in seen.items() if k not in ("factory", "host", "port", "workers")}
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(app, lifespan="on", **options))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        assert wait_until(lambda: server.started, timeout=30)
        with httpx.Client(base_url=url, timeout=10) as http:
            assert wait_until(lambda: http.get("/readyz").status_code == 200, timeout=30)
        yield url, server
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


def connect(url: str, source: str = "127.0.0.1") -> socket.socket:
    host, port = url.rsplit("//", 1)[1].split(":")
    return socket.create_connection((host, int(port)), timeout=10, source_address=(source, 0))


def read_until_closed(conn: socket.socket) -> bytes:
    """Everything the server sends until it closes (a reset counts as closed)."""
    data = b""
    try:
        while chunk := conn.recv(4096):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def recommend(url: str, source: str = "127.0.0.1") -> httpx.Response:
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(base_url=url, timeout=10, transport=transport) as http:
        return http.post("/v1/recommend", json={"domain": "arts", "n": 3})


def test_idle_and_partial_header_connections_do_not_make_requests_503(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    make_settings: Callable[..., Settings],
    engine_factory: FakeEngineFactory,
) -> None:
    """Issue 22: connections that never complete a request held uvicorn's
    limit_concurrency (it counts sockets), so every real request got 503. Ten such
    connections against max_concurrency=4: a normal recommend is still answered."""
    app = create_app(
        make_settings(max_concurrency=4), engine_factory=engine_factory, store=MemoryStore()
    )
    with served_like_micrec(app, tmp_path, monkeypatch, max_concurrency="4") as (url, server):
        idle = [connect(url, ATTACKER) for _ in range(10)]
        try:
            for conn in idle[:5]:
                conn.sendall(PARTIAL)  # headers never completed; the other five say nothing
            assert wait_until(lambda: len(server.server_state.connections) >= 10)
            for _ in range(3):
                r = recommend(url)
                assert r.status_code == 200, r.text
        finally:
            for conn in idle:
                conn.close()


def test_requests_in_flight_beyond_max_concurrency_get_503_with_retry_after(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    make_settings: Callable[..., Settings],
    engine_factory: FakeEngineFactory,
) -> None:
    """The limit still holds for requests: with 2 in flight and max_concurrency=2 a third
    is answered 503 at once, with Retry-After and a message naming the setting."""
    app = create_app(
        make_settings(max_concurrency=2), engine_factory=engine_factory, store=MemoryStore()
    )
    gate = threading.Event()
    entered: list[int] = []

    @app.get("/test-slow")
    async def slow() -> dict[str, bool]:
        entered.append(1)
        await anyio.to_thread.run_sync(gate.wait, 30)
        return {"ok": True}

    with served_like_micrec(app, tmp_path, monkeypatch, max_concurrency="2") as (url, _):
        answers: list[int] = []

        def call() -> None:
            answers.append(httpx.get(url + "/test-slow", timeout=30).status_code)

        callers = [threading.Thread(target=call) for _ in range(2)]
        for t in callers:
            t.start()
        try:
            assert wait_until(lambda: len(entered) == 2)
            r = httpx.get(url + "/healthz", timeout=10)
            assert r.status_code == 503
            assert r.headers["Retry-After"] == "1"
            assert "max_concurrency=2" in r.json()["detail"]
        finally:
            gate.set()
            for t in callers:
                t.join(30)
        assert answers == [200, 200]
        assert httpx.get(url + "/healthz", timeout=10).status_code == 200


def test_per_client_cap_refuses_extra_connections_without_a_request(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    make_settings: Callable[..., Settings],
    engine_factory: FakeEngineFactory,
) -> None:
    """max_pending_per_client=3: a 4th connection from the same address that has sent no
    complete request is answered 429 and closed; another client is served; once one of
    the first three completes a request, the address may open a new connection."""
    app = create_app(make_settings(), engine_factory=engine_factory, store=MemoryStore())
    with served_like_micrec(app, tmp_path, monkeypatch, max_pending_per_client="3") as (url, _):
        held = [connect(url, ATTACKER) for _ in range(3)]
        try:
            held[0].sendall(PARTIAL)
            extra = connect(url, ATTACKER)
            with extra:
                answer = read_until_closed(extra)
            assert answer.startswith(b"HTTP/1.1 429 "), answer[:80]
            assert b"max_pending_per_client=3" in answer

            r = recommend(url)  # another address
            assert r.status_code == 200, r.text

            held[1].sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert held[1].recv(4096).startswith(b"HTTP/1.1 200 ")
            r = recommend(url, ATTACKER)  # one slot free again (held[1] is served now)
            assert r.status_code == 200, r.text
        finally:
            for conn in held:
                conn.close()


def test_a_silent_connection_is_closed_after_the_header_timeout(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    make_settings: Callable[..., Settings],
    engine_factory: FakeEngineFactory,
) -> None:
    """A connection that sends nothing was never timed out (the header deadline started
    at the first byte): now its first request's deadline runs from the connection's start."""
    app = create_app(make_settings(), engine_factory=engine_factory, store=MemoryStore())
    with (
        served_like_micrec(app, tmp_path, monkeypatch, header_timeout_s="0.5") as (url, _),
        connect(url) as conn,
    ):
        assert read_until_closed(conn) == b""


def test_a_second_request_on_a_connection_gets_its_own_header_deadline(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    make_settings: Callable[..., Settings],
    engine_factory: FakeEngineFactory,
) -> None:
    """The first request's timer outlived its request, so partial headers of a second
    request sent soon after the first answer were never cut off."""
    app = create_app(make_settings(), engine_factory=engine_factory, store=MemoryStore())
    with (
        served_like_micrec(app, tmp_path, monkeypatch, header_timeout_s="2") as (url, _),
        connect(url) as conn,
    ):
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert conn.recv(4096).startswith(b"HTTP/1.1 200 ")
        conn.sendall(PARTIAL)
        assert read_until_closed(conn) == b""


def test_connections_beyond_max_connections_are_refused_with_503(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    make_settings: Callable[..., Settings],
    engine_factory: FakeEngineFactory,
) -> None:
    """max_connections=3 (per-client cap off): with three connections open a fourth is
    answered 503 before anything is read; once one closes, a request is served again."""
    app = create_app(make_settings(), engine_factory=engine_factory, store=MemoryStore())
    env = {"max_connections": "3", "max_pending_per_client": "0"}
    with served_like_micrec(app, tmp_path, monkeypatch, **env) as (url, server):
        held = [connect(url, ATTACKER) for _ in range(3)]
        try:
            assert wait_until(lambda: len(server.server_state.connections) == 3)
            with connect(url) as extra:
                answer = read_until_closed(extra)
            assert answer.startswith(b"HTTP/1.1 503 "), answer[:80]
            assert b"max_connections=3" in answer
            held.pop().close()
            assert wait_until(lambda: len(server.server_state.connections) == 2)
            assert recommend(url).status_code == 200
        finally:
            for conn in held:
                conn.close()


def test_serve_raises_the_open_file_limit_to_fit_max_connections(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import resource

    from app.commands.serve import OPEN_FILES_RESERVE

    limits = {"now": (1024, 65536)}
    monkeypatch.setattr(resource, "getrlimit", lambda kind: limits["now"])
    monkeypatch.setattr(resource, "setrlimit", lambda kind, value: limits.update(now=value))
    monkeypatch.setattr(uvicorn, "run", lambda *a, **kw: None)
    monkeypatch.setenv("MICREC_ENCODER_PROCESS", "false")
    monkeypatch.setenv("MICREC_MAX_CONNECTIONS", "5000")
    (tmp_path / "manifest.json").write_text("{}")
    assert main(["serve", "--bundle", str(tmp_path)]) == 0
    assert limits["now"] == (5000 + OPEN_FILES_RESERVE, 65536)
