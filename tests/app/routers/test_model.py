"""GET /v1/model."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.app.conftest import AUTH


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
    }
    assert info["indexes"]["arts"]["size"] == 60
    assert set(info["encoders"]) == {"text", "image"}
    assert info["bundle_path"].endswith("bundle-v1")
