"""A bad bundle never serves: refused at start-up (not ready, clear error) and at hot reload
(the running model stays in service).

Real bundles (``model.bundle`` format: manifest + sha256 of every file), built in seconds
with the toy recipe of tests/model/test_bundle.py, loaded by the production engine factory
(``app.service.load_engine``). Damage: a flipped byte (tampered), a cut file (truncated),
a missing file, a manifest of another format version, a manifest whose model config does
not match the weights, an unreadable manifest, a directory that is not a bundle.

The in-process tests run in CI; ``test_bad_bundle_process_*`` (slow) checks the same
through a real ``uvicorn`` process and its log.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from app.http.main import create_app
from app.settings import Settings
from tests.model.test_bundle import make_toy_bundle
from tests.reliability.procs import (
    ADMIN,
    ADMIN_KEY,
    API_KEY,
    AUTH,
    REAL_APP,
    ServiceProcess,
    record,
    wait_for,
)


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def _edit_manifest(bundle: Path, edit: Callable[[dict], None]) -> None:
    mpath = bundle / "manifest.json"
    manifest = json.loads(mpath.read_text())
    edit(manifest)
    mpath.write_text(json.dumps(manifest))


def _other_dim(m: dict) -> None:
    m["model_config"]["dim"] = int(m["model_config"]["dim"]) * 2


DAMAGE: dict[str, tuple[Callable[[Path], None], str]] = {
    # name: (how to damage a copy of the bundle, what the error must say)
    "tampered-weights": (lambda b: _flip_byte(b / "weights.safetensors"), "tampered or truncated"),
    "tampered-catalogue": (lambda b: _flip_byte(b / "catalogue.json"), "tampered or truncated"),
    "truncated-domain-file": (
        lambda b: _truncate(b / "domain-0.safetensors"),
        "tampered or truncated",
    ),
    "missing-file": (lambda b: (b / "domain-1.safetensors").unlink(), "missing file"),
    "format-version-mismatch": (
        lambda b: _edit_manifest(b, lambda m: m.update(format_version=999)),
        "format version 999",
    ),
    "model-config-mismatch": (
        lambda b: _edit_manifest(b, _other_dim),
        "does not match this model code",
    ),
    "truncated-manifest": (
        lambda b: (b / "manifest.json").write_text((b / "manifest.json").read_text()[:50]),
        "unreadable manifest",
    ),
    "not-a-bundle": (lambda b: (b / "manifest.json").unlink(), "not a bundle"),
}


@pytest.fixture(scope="module")
def good_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path, _, _ = make_toy_bundle(tmp_path_factory.mktemp("bundles") / "good")
    return path


def damaged_copy(good: Path, where: Path, damage: str) -> Path:
    bad = where / f"bad-{damage}"
    shutil.copytree(good, bad)
    DAMAGE[damage][0](bad)
    return bad


def _settings(bundle: Path, tmp: Path) -> Settings:
    return Settings(
        bundle_path=bundle,
        store_url=f"sqlite:///{tmp / 'state.db'}",
        api_keys=[API_KEY],
        admin_keys=[ADMIN_KEY],
        bundles_dir=Path(os.path.commonpath([bundle, tmp])),  # damaged copies live in tmp
        warm_encoders=False,
        torch_threads=1,
        faiss_threads=1,
    )


@contextmanager
def serving(settings: Settings) -> Iterator[TestClient]:
    """The production app (real ``load_engine``) behind a TestClient, lifespan included."""
    with TestClient(create_app(settings)) as client:
        yield client


def _wait_load_done(client: TestClient, timeout: float = 60) -> httpx.Response:
    """/readyz once the initial load ended (ready or failed); the timeout only bounds it."""
    deadline = time.monotonic() + timeout
    while True:
        r = client.get("/readyz")
        if r.json()["status"] != "loading" or time.monotonic() > deadline:
            return r
        time.sleep(0.05)


def _wait_reload_done(client: TestClient, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        status = client.get("/v1/admin/reload", headers=ADMIN).json()
        if status["status"] != "loading" or time.monotonic() > deadline:
            return status
        time.sleep(0.05)


def _recommend(client: TestClient | httpx.Client, domain: str) -> httpx.Response:
    return client.post("/v1/recommend", json={"domain": domain, "n": 3}, headers=AUTH)


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_bad_bundle_refused_at_start(good_bundle: Path, tmp_path: Path, damage: str) -> None:
    bad = damaged_copy(good_bundle, tmp_path, damage)
    with serving(_settings(bad, tmp_path)) as client:
        r = _wait_load_done(client)
        body = r.json()
        assert r.status_code == 503, body
        assert body["status"] == "failed", body
        assert str(bad) not in r.text, body  # no path without the admin key
        error = client.get("/v1/admin/reload", headers=ADMIN).json()["error"]
        assert DAMAGE[damage][1] in error and str(bad) in error  # the admin sees why and where
        # nothing serves: every model endpoint says so, never a 500
        rec = _recommend(client, "0")
        assert rec.status_code == 503 and "model load failed" in rec.json()["detail"], rec.text
        assert client.get("/v1/model").status_code == 503


def test_good_bundle_serves(good_bundle: Path, tmp_path: Path) -> None:
    """The control: the undamaged bundle loads and recommends with the same settings."""
    with serving(_settings(good_bundle, tmp_path)) as client:
        r = _wait_load_done(client)
        assert r.status_code == 200, r.text
        # the toy recipe's encoders ("toy-text", "toy-image") exist nowhere: the model
        # serves, and /readyz says only that those cannot encode here
        assert set(r.json()["encoders_unavailable"]) == {"text", "image"}, r.text
        assert all("encoder unavailable" in d for d in r.json()["degraded"]), r.text
        domain = r.json()["domains"][0]
        rec = _recommend(client, domain)
        assert rec.status_code == 200 and rec.json()["items"], rec.text


@pytest.fixture(scope="module")
def serving_good(
    good_bundle: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[TestClient, Path]]:
    tmp = tmp_path_factory.mktemp("reload")
    with serving(_settings(good_bundle, tmp)) as client:
        r = _wait_load_done(client)
        assert r.status_code == 200, r.text
        yield client, tmp


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_bad_bundle_refused_at_reload(
    good_bundle: Path, serving_good: tuple[TestClient, Path], damage: str
) -> None:
    client, tmp = serving_good
    before = client.get("/v1/model").json()
    domain = before["domains"][0]
    served_before = _recommend(client, domain).json()
    bad = damaged_copy(good_bundle, tmp, damage)

    r = client.post("/v1/admin/reload", json={"bundle_path": str(bad)}, headers=ADMIN)
    assert r.status_code == 202, r.text
    status = _wait_reload_done(client)
    assert status["status"] == "failed", status
    assert DAMAGE[damage][1] in status["error"], status
    assert status["model_version"] == before["model_version"]

    # the running model stays in service, unchanged, and readiness says what failed
    after = client.get("/v1/model").json()
    assert after["model_version"] == before["model_version"]
    assert (
        client.get("/v1/admin/reload", headers=ADMIN).json()["model_version"]
        == (before["model_version"])
    )
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["status"] == "degraded"
    assert any("last reload failed" in d for d in ready.json()["degraded"]), ready.json()
    rec = _recommend(client, domain)
    assert rec.status_code == 200, rec.text
    assert rec.json()["items"] == served_before["items"]

    # and a good reload afterwards clears the degradation
    r = client.post("/v1/admin/reload", json={"bundle_path": str(good_bundle)}, headers=ADMIN)
    assert r.status_code == 202, r.text
    assert _wait_reload_done(client)["status"] == "succeeded"
    reasons = client.get("/readyz").json()["degraded"]
    assert not any("last reload failed" in d for d in reasons), reasons  # (toy encoders remain)


# --- the same through a real uvicorn process (slow) ---------------------------------------
PROCESS_DAMAGE = ["tampered-weights", "truncated-domain-file", "format-version-mismatch"]


def _process(bundle: Path, tmp: Path, name: str) -> ServiceProcess:
    return ServiceProcess(
        {
            "MICREC_BUNDLE_PATH": str(bundle),
            "MICREC_STORE_URL": f"sqlite:///{tmp / f'{name}.db'}",
            "MICREC_WARM_ENCODERS": "false",
            "MICREC_BUNDLES_DIR": os.path.commonpath([bundle, tmp]),
        },
        app=REAL_APP,
        log_path=tmp / f"{name}.log",
    )


@pytest.mark.slow
@pytest.mark.parametrize("damage", PROCESS_DAMAGE)
def test_bad_bundle_process_start_and_reload(
    good_bundle: Path, tmp_path: Path, damage: str
) -> None:
    bad = damaged_copy(good_bundle, tmp_path, damage)
    expected = DAMAGE[damage][1]

    # start-up on the bad bundle: the process runs, is not ready, and says why (HTTP + log)
    svc = _process(bad, tmp_path, "bad")
    try:
        svc.start(wait_ready=False)
        svc.wait_listening(120)
        with httpx.Client(base_url=svc.url, timeout=10) as http:
            assert wait_for(lambda: http.get("/readyz").json()["status"] != "loading", 120)
            r = http.get("/readyz")
            assert r.status_code == 503 and r.json()["status"] == "failed", r.text
            assert expected in http.get("/v1/admin/reload", headers=ADMIN).json()["error"]
            assert _recommend(http, "0").status_code == 503
        assert "model load failed" in svc.log_tail(200) and expected in svc.log_tail(200)
    finally:
        svc.stop()

    # a good process asked to reload the bad bundle keeps serving its model
    with (
        _process(good_bundle, tmp_path, "good") as good,
        httpx.Client(base_url=good.url, timeout=10) as http,
    ):
        version = http.get("/v1/model").json()["model_version"]
        domain = http.get("/v1/model").json()["domains"][0]
        served = _recommend(http, domain).json()["items"]
        r = http.post("/v1/admin/reload", json={"bundle_path": str(bad)}, headers=ADMIN)
        assert r.status_code == 202, r.text
        assert wait_for(
            lambda: http.get("/v1/admin/reload", headers=ADMIN).json()["status"] != "loading", 120
        )
        status = http.get("/v1/admin/reload", headers=ADMIN).json()
        assert status["status"] == "failed" and expected in status["error"], status
        assert http.get("/v1/model").json()["model_version"] == version
        assert http.get("/readyz").json()["status"] == "degraded"
        rec = _recommend(http, domain)
        assert rec.status_code == 200 and rec.json()["items"] == served, rec.text
    record("bundle-safety-process", damage=damage, refused_at_start=True, refused_at_reload=True)
