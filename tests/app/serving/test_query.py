"""``POST /v1/recommend`` with a ``query``: a visitor started from a text and/or a picture
(FakeEngine: the query's vector is the content projection a registered item would get;
the real engines: tests/app/test_real_bundle.py and tests/app/test_clip_bundle.py)."""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from app.settings import Settings
from tests.app.catalogue.test_content import png_bytes
from tests.app.conftest import AUTH, running
from tests.app.fakes import FakeEngineFactory


def ask(client: TestClient, **body: Any) -> Any:
    return client.post("/v1/recommend", json={"domain": "arts", "n": 5, **body})


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_a_text_query_ranks_by_content(client: TestClient) -> None:
    r = ask(client, query={"text": "red enamel mug"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["user_embedding"] == "query"
    assert len(body["items"]) == 5 and {it["source"] for it in body["items"]} == {"query"}
    assert body["history"]["items_used"] == 0
    # the ranking depends on the query (a fallback would give the same list for any)
    other = ask(client, query={"text": "printer toner cartridge"}).json()
    assert [it["item_id"] for it in other["items"]] != [it["item_id"] for it in body["items"]]
    assert ask(client, query={"text": "red enamel mug"}).json()["items"] == body["items"]


def test_a_picture_query_and_both(client: TestClient) -> None:
    picture = b64(png_bytes((32, 32), "blue"))
    only = ask(client, query={"image_base64": picture})
    assert only.status_code == 200, only.text
    assert only.json()["user_embedding"] == "query"
    both = ask(client, query={"text": "blue mug", "image_base64": picture})
    assert both.status_code == 200 and both.json()["items"] != only.json()["items"]


def test_the_query_is_bounded_and_checked(
    client: TestClient, make_settings: Callable[..., Settings]
) -> None:
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"query": {}}, 422, "non-empty text or an image"),
        ({"query": {"text": "   "}}, 422, "non-empty text"),
        ({"query": {"text": "x" * 10_001}}, 422, "max_text_chars=10000"),
        ({"query": {"text": "mug"}, "history": ["arts-1"]}, 422, "not both"),
        ({"query": {"text": "mug"}, "user_id": "u-bundle"}, 422, "not both"),
        ({"query": {"text": "mug", "extra": 1}}, 422, "extra"),
        ({"query": {"image_base64": "not base64!"}}, 422, "not valid base64"),
        ({"query": {"image_base64": b64(b"GIF89a-not-an-image")}}, 422, "accepted format"),
        ({"query": {"image_base64": b64(png_bytes((4000, 1)))}}, 422, "aspect"),
        ({"query": {"text": "mug"}, "domain": "toys"}, 422, "unknown domain"),
    ]
    for body, status, words in cases:
        r = client.post("/v1/recommend", json={"domain": "arts", **body}, headers=AUTH)
        assert r.status_code == status, (body, r.text)
        assert words in r.text, (body, r.text)
        assert len(r.text) < 2000  # never the whole input echoed back


def test_picture_limits_are_the_registration_ones(
    make_settings: Callable[..., Settings], engine_factory: FakeEngineFactory
) -> None:
    settings = make_settings(max_image_pixels=100, max_image_bytes=10_000)
    with running(settings, engine_factory) as client:
        r = ask(client, query={"image_base64": b64(png_bytes((20, 20)))})
        assert r.status_code == 413 and "max_image_pixels=100" in r.text
        r = ask(client, query={"image_base64": b64(b"\x89PNG" + bytes(20_000))})
        assert r.status_code == 413 and "max_image_bytes" in r.text


def test_an_unavailable_encoder_is_a_503_and_named_in_readyz(
    tmp_path: Path, make_settings: Callable[..., Settings], engine_factory: FakeEngineFactory
) -> None:
    """A bundle whose image encoder cannot be created here (no weights configured): text
    queries and recommendations serve; pictures answer 503 with the reason."""
    bundle = engine_factory.make_bundle(
        tmp_path / "b", unavailable={"image": "open_clip weights not configured"}
    )
    with running(make_settings(bundle_path=bundle), engine_factory) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["status"] == "degraded"
        assert ready.json()["encoders_unavailable"] == {"image": "open_clip weights not configured"}
        assert any("image encoder unavailable" in d for d in ready.json()["degraded"])
        assert ask(client, query={"text": "mug"}).status_code == 200
        assert ask(client, history=["arts-1"]).status_code == 200
        r = ask(client, query={"image_base64": b64(png_bytes((16, 16)))})
        assert r.status_code == 503 and "weights not configured" in r.text
        assert r.headers["Retry-After"]
        item = {"item_id": "new-1", "domain": "arts", "image_base64": b64(png_bytes((16, 16)))}
        r = client.post("/v1/items", json=item, headers=AUTH)
        assert r.status_code == 503 and "weights not configured" in r.text


def test_model_info_lists_what_a_query_may_hold(client: TestClient) -> None:
    info = client.get("/v1/model", headers=AUTH).json()
    assert info["query_modalities"] == ["image", "text"]
