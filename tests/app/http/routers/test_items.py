"""Item registration (JSON and multipart; text, image, both), CRUD, similar, and limits."""

from __future__ import annotations

import base64
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

from app.settings import Settings
from tests.app.catalogue.test_content import png_bytes, png_header_only
from tests.app.conftest import AUTH, running, served_by_model
from tests.app.fakes import FakeEngineFactory, MemoryStore


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def assert_recommended(client: TestClient, item_id: str, domain: str) -> None:
    """The new item is in the index the model ranks, right after registration."""
    assert served_by_model(client, item_id, domain)


@pytest.mark.parametrize(
    ("extra", "modalities"),
    [
        ({"title": "red mug", "categories": ["kitchen", "mugs"]}, ["text"]),
        ({"image_base64": b64(png_bytes((16, 16), "green"))}, ["image"]),
        (
            {
                "title": "blue mug",
                "description": "big",
                "image_base64": b64(png_bytes((9, 9), "blue")),
            },
            ["image", "text"],
        ),
    ],
    ids=["text", "image", "text+image"],
)
def test_register_json_then_recommended(
    client: TestClient, extra: dict, modalities: list[str]
) -> None:
    r = client.post("/v1/items", json={"item_id": "new-1", "domain": "arts", **extra}, headers=AUTH)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["origin"] == "api" and body["modalities"] == modalities
    assert body["created_at"] is not None
    assert_recommended(client, "new-1", "arts")
    got = client.get("/v1/items/new-1").json()
    assert got == body


@pytest.mark.parametrize("with_text", [True, False], ids=["text+image", "image"])
def test_register_multipart_then_recommended(client: TestClient, with_text: bool) -> None:
    data: dict = {"item_id": "mp-1", "domain": "office"}
    if with_text:  # categories count as text too
        data.update(title="desk lamp", categories=["desk", "lamps"])
    files = {"image": ("lamp.png", png_bytes((20, 10), "yellow"), "image/png")}
    r = client.post("/v1/items", data=data, files=files, headers=AUTH)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["categories"] == (["desk", "lamps"] if with_text else [])
    assert body["modalities"] == (["image", "text"] if with_text else ["image"])
    assert_recommended(client, "mp-1", "office")


def test_registered_item_appears_in_latest_fallback_and_popular(
    make_settings: Callable[..., Settings], engine_factory: FakeEngineFactory
) -> None:
    # one trusted key: no popularity_key_cap (the cap: tests/app/lifecycle/test_popularity.py)
    with running(make_settings(popularity_key_cap=0), engine_factory, MemoryStore()) as client:
        client.post(
            "/v1/items", json={"item_id": "hot", "domain": "arts", "title": "hot"}, headers=AUTH
        )
        rows = [{"user_id": f"u{k}", "item_id": "hot"} for k in range(200)]
        r = client.post("/v1/interactions", json={"interactions": rows}, headers=AUTH)
        assert r.status_code == 200
        out = client.post("/v1/recommend", json={"domain": "arts", "n": 1}).json()
        assert out["items"] == [{"item_id": "hot", "score": 200.0, "source": "popular"}]


def test_conflicts_and_read_only_bundle_items(client: TestClient) -> None:
    new = {"item_id": "dup", "domain": "arts", "title": "x"}
    assert client.post("/v1/items", json=new, headers=AUTH).status_code == 201
    r = client.post("/v1/items", json={**new, "title": "other"}, headers=AUTH)
    assert r.status_code == 409 and "already exists" in r.json()["detail"]
    r = client.post("/v1/items", json={**new, "item_id": "arts-1"}, headers=AUTH)
    assert r.status_code == 409 and "bundle" in r.json()["detail"]
    assert client.get("/v1/items/arts-1").json()["origin"] == "bundle"
    r = client.put("/v1/items/arts-1", json={"domain": "arts", "title": "y"}, headers=AUTH)
    assert r.status_code == 409 and "read-only" in r.json()["detail"]
    r = client.delete("/v1/items/arts-1", headers=AUTH)
    assert r.status_code == 409 and "cannot be deleted" in r.json()["detail"]


def test_put_creates_then_replaces_and_delete(client: TestClient) -> None:
    r = client.put("/v1/items/p1", json={"domain": "arts", "title": "one"}, headers=AUTH)
    assert r.status_code == 201 and r.json()["title"] == "one"
    created = r.json()["created_at"]
    r = client.put("/v1/items/p1", json={"domain": "office", "title": "two"}, headers=AUTH)
    assert r.status_code == 200
    assert r.json()["domain"] == "office" and r.json()["created_at"] == created
    r = client.put("/v1/items/p1", json={"item_id": "other", "domain": "office"}, headers=AUTH)
    assert r.status_code == 422 and "differs" in r.json()["detail"]
    files = {"image": ("a.png", png_bytes(), "image/png")}
    r = client.put("/v1/items/p1", data={"domain": "office"}, files=files, headers=AUTH)
    assert r.status_code == 200 and r.json()["modalities"] == ["image"]
    assert client.delete("/v1/items/p1", headers=AUTH).status_code == 204
    assert client.get("/v1/items/p1").status_code == 404
    r = client.delete("/v1/items/p1", headers=AUTH)
    assert r.status_code == 404 and "not found" in r.json()["detail"]
    out = client.post("/v1/recommend", json={"history": ["p1"], "domain": "office"}).json()
    assert out["history"]["unknown_ids"] == ["p1"]


def test_similar_items(client: TestClient) -> None:
    r = client.get("/v1/items/arts-3/similar", params={"n": 4})
    assert r.status_code == 200
    body = r.json()
    assert body["domain"] == "arts" and len(body["items"]) == 4
    assert all(i["item_id"].startswith("arts-") and i["item_id"] != "arts-3" for i in body["items"])
    assert client.get("/v1/items/nope/similar").status_code == 404
    assert client.get("/v1/items/arts-3/similar", params={"n": 0}).status_code == 422
    many = client.get("/v1/items/arts-3/similar", params={"n": 500}).json()
    assert len(many["items"]) == 59  # clamped to the index


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"item_id": "x", "domain": "toys", "title": "t"}, 422, "valid domains"),
        ({"item_id": "x", "domain": "arts", "image_base64": "%%%"}, 422, "base64"),
        (
            {"item_id": "x", "domain": "arts", "image_base64": b64(b"plain text")},
            422,
            "accepted format",
        ),
        (
            {
                "item_id": "x",
                "domain": "arts",
                "image_base64": b64(png_bytes((40, 40), fmt="JPEG")[:300]),
            },
            422,
            "truncated",
        ),
        (
            {
                "item_id": "x",
                "domain": "arts",
                "image_base64": b64(png_header_only(50_000, 50_000)),
            },
            413,
            "max_image_pixels",
        ),
        ({"item_id": "x", "domain": "arts", "title": "t" * 10_001}, 422, "max_text_chars"),
        ({"item_id": "a/b", "domain": "arts"}, 422, "item_id"),
        ({"item_id": "x", "domain": "arts", "colour": "red"}, 422, "colour"),
        ({"domain": "arts"}, 422, "item_id"),
    ],
    ids=[
        "domain",
        "base64",
        "not-image",
        "truncated",
        "pixel-bomb",
        "text",
        "slash",
        "extra",
        "no-id",
    ],
)
def test_bad_items_are_rejected(client: TestClient, body: dict, status: int, needle: str) -> None:
    r = client.post("/v1/items", json=body, headers=AUTH)
    assert r.status_code == status, r.text
    assert needle in r.json()["detail"]


def test_image_byte_limits(
    make_settings: Callable[..., Settings], engine_factory: FakeEngineFactory
) -> None:
    big = png_bytes((300, 300), "red", fmt="BMP")  # ~270 kB, incompressible format
    with running(
        make_settings(max_image_bytes=100_000, max_image_pixels=50_000),
        engine_factory,
        MemoryStore(),
    ) as c:
        r = c.post(
            "/v1/items",
            json={"item_id": "x", "domain": "arts", "image_base64": b64(big)},
            headers=AUTH,
        )
        assert r.status_code == 413 and "max_image_bytes" in r.json()["detail"]
        files = {"image": ("big.bmp", big, "image/bmp")}
        r = c.post("/v1/items", data={"item_id": "x", "domain": "arts"}, files=files, headers=AUTH)
        assert r.status_code == 413 and "max_image_bytes" in r.json()["detail"]
        pixels = png_bytes((300, 300), "red")  # small file, 90k pixels > 50k
        files = {"image": ("p.png", pixels, "image/png")}
        r = c.post("/v1/items", data={"item_id": "x", "domain": "arts"}, files=files, headers=AUTH)
        assert r.status_code == 413 and "max_image_pixels" in r.json()["detail"]
        assert c.get("/v1/items/x").status_code == 404


def test_content_type_and_form_errors(client: TestClient) -> None:
    r = client.post(
        "/v1/items", content=b"item_id=x", headers={**AUTH, "Content-Type": "text/plain"}
    )
    assert r.status_code == 415 and "multipart/form-data" in r.json()["detail"]
    r = client.post(
        "/v1/items", data={"item_id": "x", "domain": "arts", "image": "notafile"}, headers=AUTH
    )
    # a plain form field named image (no file) is refused, not ignored
    assert r.status_code in (415, 422)
    files = {"image": ("a.png", png_bytes(), "image/png")}
    r = client.post(
        "/v1/items",
        data={"item_id": "x", "domain": "arts", "image_base64": b64(png_bytes())},
        files=files,
        headers=AUTH,
    )
    assert r.status_code == 422 and "not both" in r.json()["detail"]


def test_text_only_model_rejects_nothing_but_ignores_image(
    tmp_path, make_settings: Callable[..., Settings]
) -> None:
    factory = FakeEngineFactory()
    bundle = factory.make_bundle(tmp_path / "t", modalities=["text"])
    with running(make_settings(bundle_path=bundle), factory, MemoryStore()) as c:
        r = c.post(
            "/v1/items",
            json={
                "item_id": "t1",
                "domain": "arts",
                "title": "x",
                "image_base64": b64(png_bytes()),
            },
            headers=AUTH,
        )
        assert r.status_code == 201 and r.json()["modalities"] == ["text"]


# --- Idempotency-Key (app/runtime/idempotency.py) --------------------------------------------------
def test_idempotency_key_replays_a_registration(
    client: TestClient, memory_store: MemoryStore
) -> None:
    headers = {**AUTH, "Idempotency-Key": "reg-1"}
    new = {"item_id": "ik-1", "domain": "arts", "title": "idempotent mug"}
    first = client.post("/v1/items", json=new, headers=headers)
    again = client.post("/v1/items", json=new, headers=headers)
    assert first.status_code == again.status_code == 201, first.text
    assert first.content == again.content and first.json()["item_id"] == "ik-1"
    assert again.headers["Idempotent-Replayed"] == "true"
    assert len(memory_store.item_changes(0)) == 1  # registered (written) once
    r = client.post("/v1/items", json={**new, "title": "other"}, headers=headers)
    assert r.status_code == 422 and "already used for another request" in r.json()["detail"]
    # Without a key, a content-identical re-POST is still answered 200 (idempotent by content).
    r = client.post("/v1/items", json=new, headers=AUTH)
    assert r.status_code == 200 and "Idempotent-Replayed" not in r.headers


def test_idempotency_key_with_multipart(client: TestClient, memory_store: MemoryStore) -> None:
    headers = {**AUTH, "Idempotency-Key": "reg-mp"}
    data = {"item_id": "ik-mp", "domain": "office", "title": "lamp"}
    png = png_bytes((20, 10), "yellow")
    boundary = "fixed-boundary-for-retries"
    body, ctype = _multipart(data, png, boundary)
    send = {**headers, "Content-Type": ctype}
    first = client.post("/v1/items", content=body, headers=send)
    again = client.post("/v1/items", content=body, headers=send)
    assert first.status_code == again.status_code == 201, first.text
    assert first.json()["modalities"] == ["image", "text"]
    assert again.headers["Idempotent-Replayed"] == "true" and first.content == again.content
    other, _ = _multipart(data, png_bytes((20, 10), "blue"), boundary)
    r = client.post("/v1/items", content=other, headers=send)
    assert r.status_code == 422
    assert len(memory_store.item_changes(0)) == 1


def _multipart(fields: dict[str, str], png: bytes, boundary: str) -> tuple[bytes, str]:
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
        for k, v in fields.items()
    ]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n'
        "Content-Type: image/png\r\n\r\n".encode()
        + png
        + b"\r\n"
    )
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def test_a_refused_keyed_registration_runs_again_on_retry(client: TestClient) -> None:
    headers = {**AUTH, "Idempotency-Key": "reg-conflict"}
    first = client.post("/v1/items", json={"item_id": "c-1", "domain": "arts"}, headers=AUTH)
    assert first.status_code == 201
    new = {"item_id": "c-1", "domain": "arts", "title": "wanted"}
    assert client.post("/v1/items", json=new, headers=headers).status_code == 409
    assert client.delete("/v1/items/c-1", headers=AUTH).status_code == 204
    r = client.post("/v1/items", json=new, headers=headers)  # the 409 applied nothing
    assert r.status_code == 201 and "Idempotent-Replayed" not in r.headers
