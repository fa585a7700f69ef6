"""Shared fixtures of the reliability tests: a private redis-server, a fake bundle, a tiny
real bundle, and service processes configured like production (``MICREC_*`` environment
only)."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bench.redis_server import RedisServer
from tests.app.fakes import FakeEngineFactory
from tests.reliability.procs import FAKE_APP, ServiceProcess
from tests.reliability.registry_bundles import tiny_bundle as train_tiny_bundle

MAX_N = 2000  # lets a test list a whole (fake) domain: "is the item served at all"


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A private redis-server (AOF, appendfsync always) in this test's tmp dir."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server not installed (make system-deps)")
    with RedisServer(tmp_path / "redis") as server:
        yield server


@pytest.fixture(scope="module")
def fake_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return FakeEngineFactory().make_bundle(tmp_path_factory.mktemp("fake") / "bundle")


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny real trained bundle (tests/reliability/registry_bundles.py), once a session."""
    return train_tiny_bundle(tmp_path_factory.mktemp("tiny-bundle"))


@pytest.fixture
def make_service(tmp_path: Path, fake_bundle: Path) -> Iterator[Callable[..., ServiceProcess]]:
    """``make_service(store_url, name=..., **MICREC_overrides)``: a not-yet-started
    :class:`ServiceProcess` running the FakeEngine app; every one is stopped at the end."""
    made: list[ServiceProcess] = []

    def make(
        store_url: str, *, name: str = "svc", app: str = FAKE_APP, **env: str
    ) -> ServiceProcess:
        values = {
            "MICREC_BUNDLE_PATH": str(fake_bundle),
            "MICREC_STORE_URL": store_url,
            "MICREC_WARM_ENCODERS": "false",
            "MICREC_MAX_N": str(MAX_N),
            "MICREC_STORE_RETRY_AFTER_S": "2",
        }
        values.update({f"MICREC_{k.upper()}": v for k, v in env.items()})
        svc = ServiceProcess(values, app=app, log_path=tmp_path / f"{name}.log")
        made.append(svc)
        return svc

    yield make
    for svc in made:
        svc.stop()
