"""``micrec serve`` wiring, and the app behind a real uvicorn server on loopback."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import uvicorn

from app.cli import SERVICE_COMMANDS, main
from app.http.main import create_app
from app.settings import Settings
from tests.app.conftest import AUTH, served_by_model
from tests.app.fakes import FakeEngineFactory, MemoryStore, wait_until


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("MICREC_") and key != "MICREC_THREADS":
            monkeypatch.delenv(key)


def test_serve_is_registered(capsys: pytest.CaptureFixture[str]) -> None:
    assert "app.commands.serve" in SERVICE_COMMANDS
    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert all(flag in out for flag in ("--host", "--port", "--workers", "--bundle"))


def test_serve_refuses_missing_bundle(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--bundle", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert "no model bundle" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("MICREC_MAX_N", "-3", "MICREC_MAX_N: Input should be greater than or equal to 1"),
        ("MICREC_PORT", "http", "MICREC_PORT: Input should be a valid integer"),
        ("MICREC_FALLBACK_CHAIN", "popular,random", "MICREC_FALLBACK_CHAIN: Input should be"),
        ("MICREC_DEFAULT_N", "900", "default_n (900) is larger than max_n (500)"),
        ("MICREC_MAX_NN", "5", "unknown environment keys MICREC_MAX_NN"),
    ],
)
def test_serve_refuses_bad_settings_in_one_line(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    key: str,
    value: str,
    message: str,
) -> None:
    monkeypatch.setenv(key, value)
    assert main(["serve", "--bundle", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    [line] = err.strip().splitlines()
    assert line.startswith("micrec serve: config error: invalid settings: "), line
    assert message in line, line


def test_real_uvicorn_server(
    make_settings: Callable[..., Settings], engine_factory: FakeEngineFactory
) -> None:
    app = create_app(make_settings(), engine_factory=engine_factory, store=MemoryStore())
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))  # a free loopback port, chosen by the OS
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=10) as http:
            assert wait_until(lambda: server.started, timeout=30)
            assert http.get("/healthz").status_code == 200
            assert wait_until(lambda: http.get("/readyz").status_code == 200, timeout=30)
            r = http.post(
                "/v1/items", json={"item_id": "live", "domain": "arts", "title": "t"}, headers=AUTH
            )
            assert r.status_code == 201
            assert served_by_model(http, "live", "arts")
            big = http.post(
                "/v1/recommend",
                content=b"x" * (11 * 1024 * 1024),
                headers={"Content-Type": "application/json"},
            )
            assert big.status_code == 413
            assert "micrec_http_requests_total" in http.get("/metrics").text
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()
    assert not thread.is_alive()


def test_serve_runs_the_nodelay_protocol(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``micrec serve`` hands uvicorn the protocol that disables Nagle on each connection
    (with --workers > 1 uvicorn's own listening socket would leave it on: ~44 ms stalls)."""
    (tmp_path / "manifest.json").write_text("{}")
    seen: dict[str, object] = {}
    monkeypatch.setattr(uvicorn, "run", lambda *a, **kw: seen.update(kw))
    assert main(["serve", "--bundle", str(tmp_path), "--workers", "2"]) == 0
    assert seen["http"] == "app.commands.serve:NoDelayHTTPProtocol"
    assert seen["workers"] == 2


def test_nodelay_protocol_sets_tcp_nodelay(monkeypatch: pytest.MonkeyPatch) -> None:
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    from app.commands.serve import NoDelayHTTPProtocol
    from app.http.connections import ConnectionCapMixin

    # only NODELAY here: the connection guards below it are tested in tests/app/http/test_connections.py
    monkeypatch.setattr(ConnectionCapMixin, "connection_made", lambda self, transport: None)
    monkeypatch.setattr(AutoHTTPProtocol, "connection_made", lambda self, transport: None)

    class Transport:
        def __init__(self, sock: socket.socket | None) -> None:
            self.sock = sock

        def get_extra_info(self, name: str) -> object:
            return self.sock if name == "socket" else None

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:  # proto 0, like uvicorn's
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0
        protocol = NoDelayHTTPProtocol.__new__(NoDelayHTTPProtocol)
        protocol.connection_made(Transport(sock))
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    protocol.connection_made(Transport(None))  # no socket (e.g. a test transport): no error


def test_serve_passes_the_transport_limits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "manifest.json").write_text("{}")
    seen: dict[str, object] = {}
    monkeypatch.setattr(uvicorn, "run", lambda *a, **kw: seen.update(kw))
    monkeypatch.setenv("MICREC_HEADER_TIMEOUT_S", "3")
    monkeypatch.setenv("MICREC_MAX_CONCURRENCY", "64")
    assert main(["serve", "--bundle", str(tmp_path)]) == 0
    # uvicorn's limit counts idle sockets too: requests are limited by the app instead
    assert seen.get("limit_concurrency") is None
    assert seen["timeout_keep_alive"] == 5
    assert seen["h11_max_incomplete_event_size"] == 16 * 1024


@pytest.mark.parametrize("http", ["h11", "httptools"])
def test_slow_header_clients_are_disconnected(http: str) -> None:
    """A client that trickles its headers a byte at a time is cut off after
    header_timeout_s; a normal request on the same server is still answered."""
    from fastapi import FastAPI
    from uvicorn.protocols.http.h11_impl import H11Protocol
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    from app.commands.serve import HeaderTimeoutMixin

    base = H11Protocol if http == "h11" else HttpToolsProtocol

    class Fast(HeaderTimeoutMixin, base):  # type: ignore[misc,valid-type]
        header_timeout_s = 0.5

    app = FastAPI()

    @app.get("/ok")
    def ok() -> dict[str, bool]:
        return {"ok": True}

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, http=Fast, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        for _ in range(200):
            if server.started:
                break
            time.sleep(0.05)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
            c.sendall(b"GET /ok HTTP/1.1\r\nHost: x\r\n")
            closed = False
            for _ in range(40):  # up to ~4 s of trickling, one byte per 0.1 s
                try:
                    c.sendall(b"X")
                except OSError:
                    closed = True
                    break
                c.settimeout(0.1)
                try:
                    if c.recv(1024) == b"":
                        closed = True
                        break
                except TimeoutError:
                    pass
            assert closed, "a header trickle was never cut off"
        r = httpx.get(f"http://127.0.0.1:{port}/ok", timeout=5)
        assert r.status_code == 200
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


def test_serve_runs_one_encoder_process_for_its_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The workers get the encoder process's address and key in the environment while
    uvicorn runs; afterwards the process is stopped and the variables are gone."""
    from app.catalogue.encoding import ADDRESS_ENV, KEY_ENV

    seen: dict[str, str | None] = {}

    def fake_run(*a: object, **kw: object) -> None:
        seen["address"] = os.environ.get(ADDRESS_ENV)
        seen["key"] = os.environ.get(KEY_ENV)
        seen["listening"] = str(Path(seen["address"] or "/nonexistent").exists())

    monkeypatch.setattr(uvicorn, "run", fake_run)
    (tmp_path / "manifest.json").write_text("{}")
    assert main(["serve", "--bundle", str(tmp_path)]) == 0
    assert seen["address"] and seen["key"] and seen["listening"] == "True"
    assert ADDRESS_ENV not in os.environ and KEY_ENV not in os.environ
    assert not Path(seen["address"]).exists()
