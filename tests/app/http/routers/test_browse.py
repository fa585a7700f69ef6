"""The read endpoints made for browsing (the web console uses them): the item list and
search, item pictures, a user's history, the bundle's evaluation and plots, /v1/stats."""

from __future__ import annotations

import base64
import io
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.catalogue.images import THUMBNAIL_SIDE
from app.runtime.stats import quantile
from app.settings import Settings
from tests.app.conftest import ADMIN, AUTH, running
from tests.app.fakes import FakeEngineFactory, FlakyStore, MemoryStore


def png(color: str = "red", size: int = 8) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, "PNG")
    return buf.getvalue()


def register(client: TestClient, item_id: str, domain: str = "arts", **fields: object) -> None:
    body = {"item_id": item_id, "domain": domain, "title": f"new {item_id}", **fields}
    r = client.post("/v1/items", json=body, headers=AUTH)
    assert r.status_code == 201, r.text


# --- the item list -------------------------------------------------------------------
def test_a_domain_lists_registered_items_first_then_bundle_items_by_degree(
    client: TestClient,
) -> None:
    register(client, "first", categories=["arts", "paint"])
    register(client, "second")
    page = client.get("/v1/items", params={"domain": "arts", "limit": 5}).json()
    assert page["total"] == 60 + 2
    ids = [it["item_id"] for it in page["items"]]
    assert ids == ["second", "first", "arts-0", "arts-1", "arts-2"]  # fake degree: 60, 59, ...
    first = page["items"][1]
    assert first["origin"] == "api" and first["degree"] == 0
    assert first["categories"] == ["arts", "paint"]
    bundle = page["items"][2]
    assert bundle["degree"] == 60 and bundle["title"] == "arts item 0"
    assert bundle["image"] is False  # no item_images_dir configured
    across = client.get("/v1/items", params={"domain": "arts", "offset": 1, "limit": 3}).json()
    assert [it["item_id"] for it in across["items"]] == ["first", "arts-0", "arts-1"]
    tail = client.get("/v1/items", params={"domain": "arts", "offset": 61, "limit": 5}).json()
    assert [it["item_id"] for it in tail["items"]] == ["arts-59"]


def test_search_by_title_and_category_and_pages(client: TestClient) -> None:
    # fake titles "arts item <k>", categories "arts|group<k % 3>"
    found = client.get("/v1/items", params={"domain": "arts", "q": "ITEM 1"}).json()
    assert {it["item_id"] for it in found["items"]} == {"arts-1"} | {
        f"arts-{k}" for k in range(10, 20)
    }
    grouped = client.get(
        "/v1/items", params={"domain": "arts", "category": "group2", "limit": 100}
    ).json()
    assert grouped["total"] == 20
    assert all(it["categories"][-1] == "group2" for it in grouped["items"])
    second = client.get(
        "/v1/items", params={"domain": "arts", "category": "group2", "offset": 15, "limit": 10}
    ).json()
    assert [it["item_id"] for it in second["items"]] == [
        it["item_id"] for it in grouped["items"][15:]
    ]


def test_ids_lookup_keeps_order_and_leaves_unknown_ids_out(client: TestClient) -> None:
    r = client.get("/v1/items", params=[("ids", "office-3"), ("ids", "nope"), ("ids", "arts-7")])
    assert [it["item_id"] for it in r.json()["items"]] == ["office-3", "arts-7"]
    assert r.json()["items"][0]["domain"] == "office"


def test_item_list_refuses_bad_queries(client: TestClient) -> None:
    assert client.get("/v1/items").json()["detail"] == "give a domain (or ids)"
    assert client.get("/v1/items", params={"domain": "toys"}).status_code == 422
    assert client.get("/v1/items", params={"domain": "arts", "limit": 101}).status_code == 422
    too_many = [("ids", f"arts-{k}") for k in range(101)]
    assert client.get("/v1/items", params=too_many).status_code == 422


def test_item_list_follows_require_key_for_reads(
    make_settings: Callable[..., Settings], engine_factory: FakeEngineFactory
) -> None:
    with running(make_settings(require_key_for_reads=True), engine_factory, MemoryStore()) as c:
        assert c.get("/v1/items", params={"domain": "arts"}).status_code == 401
        assert c.get("/v1/items", params={"domain": "arts"}, headers=AUTH).status_code == 200
        assert c.get("/v1/items/arts-1/image").status_code == 401
        assert c.get("/v1/model/evaluation").status_code == 401
        assert c.get("/v1/stats").status_code == 401


# --- pictures ------------------------------------------------------------------------
@pytest.fixture
def pictures(tmp_path: Path) -> Path:
    d = tmp_path / "pictures"
    d.mkdir()
    (d / "arts-1.png").write_bytes(png())
    (d / "arts-2.jpg").write_bytes(b"not an image at all")
    outside = tmp_path / "secret.png"
    outside.write_bytes(png("blue"))
    os.symlink(outside, d / "arts-3.png")  # a link out of the directory
    return d


def test_bundle_pictures_come_from_item_images_dir(
    make_settings: Callable[..., Settings], engine_factory: FakeEngineFactory, pictures: Path
) -> None:
    settings = make_settings(item_images_dir=pictures)
    with running(settings, engine_factory, MemoryStore()) as c:
        r = c.get("/v1/items/arts-1/image")
        assert r.status_code == 200 and r.content == png()
        assert r.headers["content-type"] == "image/png"
        assert r.headers["x-content-type-options"] == "nosniff"
        flags = c.get("/v1/items", params=[("ids", f"arts-{k}") for k in (1, 2, 3, 4)]).json()
        assert [it["image"] for it in flags["items"]] == [True, False, False, False]
        # not an image: 404, never the bytes; a link out of the directory: not followed
        assert c.get("/v1/items/arts-2/image").status_code == 404
        assert c.get("/v1/items/arts-3/image").status_code == 404
        assert c.get("/v1/items/arts-4/image").json()["detail"] == "item 'arts-4' has no picture"
        assert c.get("/v1/items/nope/image").json()["detail"] == "item 'nope' not found"


def test_a_registered_item_serves_a_thumbnail_of_its_uploaded_image(
    client: TestClient, memory_store: MemoryStore
) -> None:
    big = png("navy", size=600)
    register(client, "pic", image_base64=base64.b64encode(big).decode())
    register(client, "text-only")
    r = client.get("/v1/items/pic/image")
    assert r.status_code == 200 and r.headers["content-type"] == "image/webp"
    with Image.open(io.BytesIO(r.content)) as img:
        assert img.format == "WEBP" and max(img.size) == THUMBNAIL_SIDE
        assert img.convert("RGB").getpixel((5, 5)) == pytest.approx((0, 0, 128), abs=8)
    stored = memory_store.get_item("pic")
    assert stored is not None and stored.picture == r.content  # the store's bytes
    flags = client.get("/v1/items", params=[("ids", "pic"), ("ids", "text-only")]).json()
    assert [it["image"] for it in flags["items"]] == [True, False]
    assert client.get("/v1/items/text-only/image").status_code == 404
    # a replacement without an image has no picture any more
    body = {"domain": "arts", "title": "now text only"}
    assert client.put("/v1/items/pic", json=body, headers=AUTH).status_code == 200
    assert client.get("/v1/items/pic/image").status_code == 404
    assert client.get("/v1/items", params={"ids": "pic"}).json()["items"][0]["image"] is False


def test_a_registered_picture_while_the_store_is_down_is_a_503(
    make_settings: Callable[..., Settings], engine_factory: FakeEngineFactory
) -> None:
    store = FlakyStore(MemoryStore())
    with running(make_settings(), engine_factory, store) as c:
        register(c, "pic", image_base64=base64.b64encode(png()).decode())
        store.down = True
        r = c.get("/v1/items/pic/image")
        assert r.status_code == 503 and r.headers["retry-after"]
        assert c.get("/v1/items/arts-1/image").status_code == 404  # bundle: no store needed


def test_a_picture_over_max_image_bytes_is_not_served(
    make_settings: Callable[..., Settings], engine_factory: FakeEngineFactory, tmp_path: Path
) -> None:
    d = tmp_path / "big"
    d.mkdir()
    (d / "arts-1.png").write_bytes(png(size=200))
    size = (d / "arts-1.png").stat().st_size
    settings = make_settings(item_images_dir=d, max_image_bytes=size - 1)
    with running(settings, engine_factory, MemoryStore()) as c:
        assert c.get("/v1/items/arts-1/image").status_code == 404


def jpeg(width: int, height: int) -> bytes:
    """A real JPEG of that size (uniform grey, so a few hundred KB at most)."""
    buf = io.BytesIO()
    Image.new("L", (width, height), 128).save(buf, "JPEG", quality=10)
    return buf.getvalue()


def test_a_bad_catalogue_picture_costs_only_its_own_picture(
    make_settings: Callable[..., Settings], engine_factory: FakeEngineFactory, tmp_path: Path
) -> None:
    """Issue 22 finding 2: a 5200x5000 JPEG (PIL's DecompressionBombError at 2x
    max_image_pixels) gave 500 on its picture and on every page listing the item."""
    d = tmp_path / "catalogue"
    d.mkdir()
    big = jpeg(5200, 5000)  # 26 MP: above 2 x 12 MP, PIL's own bomb error
    (d / "arts-0.jpg").write_bytes(big)
    (d / "arts-1.jpg").write_bytes(jpeg(4000, 4000))  # 16 MP: above 1x (PIL only warns)
    (d / "arts-2.jpg").write_bytes(big[:200])  # truncated header
    (d / "arts-3.png").write_bytes(png()[:8] + b"junk" * 10)  # PNG signature, then garbage
    (d / "arts-4.png").write_bytes(png())  # a good one beside them
    settings = make_settings(item_images_dir=d, max_image_pixels=12_000_000)
    with running(settings, engine_factory, MemoryStore()) as c:
        for item_id, reason in [
            ("arts-0", "the image has too many pixels; the limit is max_image_pixels=12000000"),
            (
                "arts-1",
                "the image is 4000x4000 = 16000000 pixels; the limit is max_image_pixels=12000000",
            ),
            ("arts-2", "the image header is damaged (OSError)"),
            ("arts-3", "the image header is damaged (OSError)"),
        ]:
            r = c.get(f"/v1/items/{item_id}/image")
            assert r.status_code == 404, (item_id, r.text)
            assert r.json()["detail"] == f"item {item_id!r} has no servable picture: {reason}"
        assert c.get("/v1/items/arts-4/image").content == png()
        # every page that lists the items answers, with the bad pictures marked unavailable
        listed = c.get("/v1/items", params={"domain": "arts", "limit": 5})
        searched = c.get("/v1/items", params={"domain": "arts", "q": "arts item", "limit": 5})
        looked_up = c.get("/v1/items", params=[("ids", f"arts-{k}") for k in range(5)])
        for page in (listed, searched, looked_up):
            assert page.status_code == 200, page.text
            flags = {it["item_id"]: it["image"] for it in page.json()["items"]}
            assert flags == {"arts-0": False, "arts-1": False, "arts-2": False} | {
                "arts-3": False,
                "arts-4": True,
            }
        assert c.get("/v1/users/arts-user-0/history", headers=AUTH).status_code == 200


# --- a user's history ----------------------------------------------------------------
def test_user_history_needs_a_key_and_shows_bundle_then_stored_history(
    client: TestClient,
) -> None:
    unknown = client.get("/v1/users/nobody/history")
    known = client.get("/v1/users/u-bundle/history")
    assert unknown.status_code == known.status_code == 401  # the same answer for both
    rows = [{"user_id": "u-bundle", "item_id": i} for i in ("office-4", "arts-9")]
    assert client.post("/v1/interactions", json={"interactions": rows}, headers=AUTH).is_success
    body = client.get("/v1/users/u-bundle/history", headers=AUTH).json()
    assert body["known_user"] is True and body["stored"] == "ok"
    assert body["domains"] == {"arts": ["arts-1", "arts-2", "arts-9"], "office": ["office-4"]}
    assert client.get("/v1/users/nobody/history", headers=AUTH).json()["known_user"] is False
    assert client.delete("/v1/users/u-bundle", headers=AUTH).status_code == 204
    assert client.get("/v1/users/u-bundle/history", headers=AUTH).json()["domains"] == {}


def test_user_history_is_open_with_open_user_reads(
    make_settings: Callable[..., Settings], engine_factory: FakeEngineFactory
) -> None:
    with running(make_settings(open_user_reads=True), engine_factory, MemoryStore()) as c:
        assert c.get("/v1/users/u-bundle/history").json()["domains"]["arts"] == ["arts-1", "arts-2"]


# --- evaluation ------------------------------------------------------------------------
def test_evaluation_reads_the_bundle_and_serves_only_its_listed_plots(
    make_settings: Callable[..., Settings], engine_factory: FakeEngineFactory, bundle: Path
) -> None:
    test = {"arts": {"all": {"n_users": 10.0, "ndcg@20": 0.3}, "deg_1-5": {"ndcg@20": 0.1}}}
    (bundle / "manifest.json").write_text(json.dumps({"metrics": {"best_epoch": 4, "test": test}}))
    (bundle / "history.json").write_text(json.dumps([{"epoch": 1, "total": 2.5}]))
    (bundle / "training_curve.png").write_bytes(png())
    (bundle / "evaluation").mkdir()
    (bundle / "evaluation" / "slices_arts.png").write_bytes(png("green"))
    (bundle / "tuning.png").write_text("<script>not a png</script>")
    with running(make_settings(), engine_factory, MemoryStore()) as c:
        report = c.get("/v1/model/evaluation").json()
        assert report["model_version"] == "fake-v1"
        assert report["metrics"]["test"] == test and report["metrics"]["best_epoch"] == 4
        assert report["history"] == [{"epoch": 1, "total": 2.5}]
        assert report["baselines"] is None
        assert report["plots"] == ["training_curve", "tuning", "slices_arts"]
        r = c.get("/v1/model/evaluation/plots/slices_arts")
        assert r.status_code == 200 and r.content == png("green")
        assert r.headers["content-type"] == "image/png"
        assert c.get("/v1/model/evaluation/plots/tuning").status_code == 404  # not a PNG
        for name in ("manifest", "..%2Fmanifest.json", "slices_office", "history.json"):
            assert c.get(f"/v1/model/evaluation/plots/{name}").status_code == 404


def test_a_bundle_without_reports_has_an_empty_evaluation(client: TestClient) -> None:
    report = client.get("/v1/model/evaluation").json()
    assert report["metrics"] == {} and report["history"] == [] and report["plots"] == []


# --- stats -----------------------------------------------------------------------------
def test_stats_count_what_the_service_did(client: TestClient) -> None:
    for _ in range(3):
        assert client.post("/v1/recommend", json={"domain": "arts"}).status_code == 200
    hist = {"history": ["arts-1"], "domain": "office", "n": 3}
    assert client.post("/v1/recommend", json=hist).status_code == 200
    register(client, "stat-1")
    assert client.get("/v1/items/nope").status_code == 404
    s = client.get("/v1/stats").json()
    assert s["recommendations"] == {"fallback": 3, "cross_domain": 1}
    assert s["fallbacks"] == 3 and s["registrations"] == 1
    assert s["items_by_source"]["popular"] == 3 * 10 and s["items_by_source"]["model"] == 3
    assert s["requests_by_status"]["4xx"] == 1 and s["requests"] >= 6
    rec = next(r for r in s["latency"] if r["route"] == "/v1/recommend")
    assert rec["count"] == 4 and 0 < rec["p50_ms"] <= rec["p95_ms"] <= rec["p99_ms"]
    assert s["reloads"] == {"succeeded": 1}
    # A local write does not move the feed position (only a contiguous read of the feed
    # does): the sync loop (every 0.05 s) reads the registration back shortly.
    deadline = time.monotonic() + 5
    while s["replica"]["feed_seq"] != 1 and time.monotonic() < deadline:
        time.sleep(0.02)
        s = client.get("/v1/stats").json()
    assert s["replica"] == {
        "store": "sqlite",  # the settings' store_url scheme (the test's store is in memory)
        "feed_seq": 1,  # one registration
        "replayed": True,
        "sync_interval_s": 0.05,
        "popularity_refresh_s": 0.05,
    }


def test_stats_show_admin_routes_only_to_an_admin_key(
    make_settings: Callable[..., Settings], engine_factory: FakeEngineFactory
) -> None:
    """Admin traffic (when operators reload, promote...) is not for every reader: without
    a key or with an API key the per-route rows leave the /v1/admin routes out."""
    with running(make_settings(), engine_factory, MemoryStore()) as c:
        assert c.get("/v1/admin/reload", headers=ADMIN).status_code == 200
        assert c.post("/v1/recommend", json={"domain": "arts"}).status_code == 200

        def routes(headers: dict[str, str]) -> set[str]:
            r = c.get("/v1/stats", headers=headers)
            assert r.status_code == 200, r.text
            return {row["route"] for row in r.json()["latency"]}

        assert "/v1/admin/reload" in routes(ADMIN)
        for who in ({}, AUTH, {"X-API-Key": "wrong"}):
            shown = routes(who)
            assert "/v1/recommend" in shown
            assert not [r for r in shown if r.startswith("/v1/admin")], who
    # authentication off altogether (local development): nothing to hide
    open_settings = make_settings(api_keys=[], admin_keys=[])
    with running(open_settings, engine_factory, MemoryStore()) as c:
        assert c.get("/v1/admin/reload").status_code == 200
        assert "/v1/admin/reload" in {r["route"] for r in c.get("/v1/stats").json()["latency"]}


def test_quantile_interpolates_inside_a_bucket_like_prometheus() -> None:
    buckets = [(0.01, 0.0), (0.1, 50.0), (1.0, 100.0), (float("inf"), 100.0)]
    assert quantile(0.5, buckets) == pytest.approx(0.1)
    assert quantile(0.25, buckets) == pytest.approx(0.01 + 0.09 * 0.5)
    assert quantile(0.99, buckets) == pytest.approx(0.1 + 0.9 * 0.98)
    assert quantile(0.5, [(0.1, 0.0), (float("inf"), 0.0)]) is None
    assert quantile(0.9, [(0.1, 1.0), (float("inf"), 10.0)]) == 0.1  # above the last bound
