"""Fixtures for the Store contract tests: a private redis-server (see bench/redis_server.py)
and one ``Backend`` per implementation, so every contract test runs on both."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.store.base import Store
from app.store.redis import RedisStore
from app.store.sqlite import SQLiteStore
from bench.redis_server import RedisServer


def _need_redis_server() -> None:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server not installed (make system-deps)")


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One server for the session; tests isolate themselves with a key prefix."""
    _need_redis_server()
    with RedisServer() as server:
        yield server


@pytest.fixture
def own_redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A server for one test, free to be stopped, killed and restarted."""
    _need_redis_server()
    with RedisServer(tmp_path / "redis") as server:
        yield server


class Backend:
    """Opens stores over one durable state, and can crash/restart what holds it."""

    def __init__(self, name: str, tmp_path: Path, server: RedisServer | None) -> None:
        self.name = name
        self.path = tmp_path / "state.db"
        self.server = server
        self.prefix = f"test-{uuid.uuid4().hex[:8]}:"
        self._opened: list[Store] = []

    def open(self) -> Store:
        store: Store
        if self.server is None:
            store = SQLiteStore(self.path)
        else:
            store = RedisStore(self.server.url, prefix=self.prefix)
        self._opened.append(store)
        return store

    def crash(self) -> None:
        """Lose everything not durable: SIGKILL redis-server and start it again on the same
        data dir (the AOF is replayed). SQLite has no server; a new SQLiteStore object on
        the file is its restart (a killed *process* is tested separately)."""
        if self.server is not None:
            self.server.stop(hard=True)
            self.server.start()

    def close_all(self) -> None:
        for store in self._opened:
            store.close()


def _backend(
    request: pytest.FixtureRequest, tmp_path: Path, server_fixture: str
) -> Iterator[Backend]:
    server = None if request.param == "sqlite" else request.getfixturevalue(server_fixture)
    backend = Backend(request.param, tmp_path, server)
    yield backend
    backend.close_all()


@pytest.fixture(params=["sqlite", "redis"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """Each implementation over a fresh state (redis: the shared server, own prefix)."""
    yield from _backend(request, tmp_path, "redis_server")


@pytest.fixture(params=["sqlite", "redis"])
def crashable_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """Like ``backend``, but redis runs on a server of this test's own (it gets killed)."""
    yield from _backend(request, tmp_path, "own_redis_server")


@pytest.fixture
def store(backend: Backend) -> Store:
    return backend.open()
