"""GET /v1/model."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.settings import Settings
from tests.app.conftest import AUTH, running
from tests.app.fakes import FakeEngineFactory, MemoryStore


def test_model_info(client: TestClient) -> None:
    client.post("/v1/items", json={"item_id": "n1", "domain": "office", "title": "t"}, headers=AUTH)
    r = client.get("/v1/model")
    assert r.status_code == 200
    info = r.json()
    assert info["model_version"] == "fake-v1"
    assert info["domains"] == ["arts", "office"]
    assert info["dim"] == 16
    assert info["registered_items"] == 1
    assert info["indexes"]["office"] == {
        "kind": "flat",
        "size": 41,
        "bundle_items": 40,
        "registered_items": 1,
        "nprobe": None,
        "calibration": None,
    }
    assert info["indexes"]["arts"]["size"] == 60
    assert set(info["encoders"]) == {"text", "image"}
    assert "bundle_path" not in info  # no filesystem path without an admin key


@pytest.mark.parametrize("target", [0.05, 1.0])
def test_model_info_reports_the_ivf_calibration(
    tmp_path: Path,
    engine_factory: FakeEngineFactory,
    make_settings: Callable[..., Settings],
    target: float,
) -> None:
    """An approximate index says how many lists it scans and the recall that bought, as
    measured on the bundle's users when it was built; a target that needs most of the
    lists is served exact instead, and says so."""
    users = {f"u{k}": {"arts": [f"arts-{k}", f"arts-{k + 1}"]} for k in range(30)}
    bundle = engine_factory.make_bundle(tmp_path / "ivf-bundle", users=users)
    settings = make_settings(
        bundle_path=bundle,
        exact_index_max_items=50,
        ivf_nlist=4,
        ivf_nprobe=1,
        ivf_target_recall=target,
    )
    with running(settings, engine_factory, MemoryStore()) as client:
        arts = client.get("/v1/model").json()["indexes"]["arts"]
    cal = arts["calibration"]
    assert arts["size"] == 60 and cal["queries"] == 30 and cal["k"] == 60
    assert cal["target_recall"] == target and cal["recall"] >= target
    if target < 0.25:  # one list of four holds a quarter of the items: enough
        assert arts["kind"] == "ivf" and arts["nprobe"] == 1 and not cal["exact_instead"]
    else:  # every list needed: exact search serves the domain
        assert arts["kind"] == "flat" and arts["nprobe"] is None and cal["exact_instead"]
