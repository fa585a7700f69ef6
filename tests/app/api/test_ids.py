"""Ids through the API (issue 22 findings 5 and 7): every user id a write accepts can be
read and erased through the user routes ("/" included: the routes take the rest of the
path), and look-alike ids (trailing spaces, fullwidth forms) are one id at every entry
point (NFKC + trim, app/api/ids.py); case is kept."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from urllib.parse import quote

import httpx
import pytest
from fastapi.testclient import TestClient

from app.api.ids import check_id, stored_forms
from app.http.main import create_app
from app.settings import Settings
from app.store.base import Interaction
from tests.app.conftest import API_KEY, AUTH, running
from tests.app.fakes import FakeEngineFactory, MemoryStore
from tests.reliability.procs import ThreadServer

ODD_USER_IDS = [
    "acme/42",
    "acme%2F42",  # a literal percent sign: distinct from acme/42
    "/leading",
    "trailing/",
    "a//b",
    "a/../b",
    "x/history",
    "x/recommendations",
    "100%",
    "with space",
    "?q=1#frag",
    "ünïcödé/用户",
    "emoji😀",
    "a+b&c=d",
    "..a",
]


def path_of(user_id: str) -> str:
    return "/v1/users/" + quote(user_id, safe="")  # what encodeURIComponent sends


def post_rows(client: TestClient | httpx.Client, rows: list[dict[str, str]]) -> dict[str, object]:
    r = client.post("/v1/interactions", json={"interactions": rows}, headers=AUTH)
    assert r.status_code == 200, r.text
    body: dict[str, object] = r.json()
    return body


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[httpx.Client, MemoryStore]]:
    """Real HTTP (uvicorn in a thread): Starlette's TestClient decodes a path twice, so
    ``%25`` could not be told from ``%``. The bundle's users and one domain's item ids hold
    "/" too."""
    factory = FakeEngineFactory({"arts": 20, "x/y": 5})
    root = tmp_path_factory.mktemp("ids")
    bundle = factory.make_bundle(root / "bundle", users={"org/7": {"arts": ["arts-1"]}})
    settings = Settings(bundle_path=bundle, api_keys=[API_KEY], store_url="sqlite:///unused")
    store = MemoryStore()
    with (
        ThreadServer(create_app(settings, engine_factory=factory, store=store)) as server,
        httpx.Client(base_url=server.url, timeout=30) as http,
    ):
        yield http, store


@pytest.mark.parametrize("user_id", ODD_USER_IDS)
def test_every_user_id_a_write_accepts_can_be_read_and_erased(
    served: tuple[httpx.Client, MemoryStore], user_id: str
) -> None:
    http, store = served
    other = "bystander"
    post_rows(
        http, [{"user_id": user_id, "item_id": "arts-3"}, {"user_id": other, "item_id": "arts-3"}]
    )
    r = http.get(path_of(user_id) + "/history", headers=AUTH)
    assert r.status_code == 200, r.text
    assert r.json()["user_id"] == user_id and r.json()["domains"] == {"arts": ["arts-3"]}
    r = http.get(path_of(user_id) + "/recommendations", params={"domain": "arts"}, headers=AUTH)
    assert r.status_code == 200 and r.json()["history"]["known_user"] is True, r.text

    r = http.delete(path_of(user_id), headers=AUTH)
    assert r.status_code == 204, r.text
    assert store.is_erased(user_id) and store.get_history(user_id) == {}
    assert not store.is_erased(other) and store.get_history(other)
    r = http.get(path_of(user_id) + "/history", headers=AUTH)
    assert r.json()["known_user"] is False and r.json()["domains"] == {}


def test_a_slash_and_a_percent_name_different_users(
    served: tuple[httpx.Client, MemoryStore],
) -> None:
    http, store = served
    rows = [
        {"user_id": "acme/9", "item_id": "arts-1"},
        {"user_id": "acme%2F9", "item_id": "arts-2"},
    ]
    post_rows(http, rows)
    assert http.delete("/v1/users/acme%2F9", headers=AUTH).status_code == 204
    assert store.is_erased("acme/9") and not store.is_erased("acme%2F9")
    assert http.delete("/v1/users/acme%252F9", headers=AUTH).status_code == 204
    assert store.is_erased("acme%2F9")


def test_a_bundle_user_with_a_slash_is_readable_and_erasable(
    served: tuple[httpx.Client, MemoryStore],
) -> None:
    http, store = served
    r = http.get("/v1/users/org%2F7/history", headers=AUTH)
    assert r.json()["known_user"] is True and r.json()["domains"] == {"arts": ["arts-1"]}, r.text
    assert http.delete("/v1/users/org/7", headers=AUTH).status_code == 204  # unescaped too
    r = http.get("/v1/users/org%2F7/history", headers=AUTH)
    assert r.json()["known_user"] is False and store.is_erased("org/7")


def test_bundle_items_with_a_slash_are_readable(served: tuple[httpx.Client, MemoryStore]) -> None:
    http, _ = served
    r = http.get("/v1/items/x%2Fy-1", headers=AUTH)
    assert r.status_code == 200 and r.json()["item_id"] == "x/y-1", r.text
    r = http.get("/v1/items/x%2Fy-1/similar", params={"n": 2}, headers=AUTH)
    assert r.status_code == 200 and r.json()["item_id"] == "x/y-1", r.text
    r = http.get("/v1/items/x%2Fy-1/image", headers=AUTH)
    assert r.json()["detail"] == "item 'x/y-1' has no picture"
    assert post_rows(http, [{"user_id": "u", "item_id": "x/y-1"}])["accepted"] == 1
    # registered ids never hold "/" (NFKC turns the fullwidth solidus into one)
    for bad in ("new/item", "new\uff0fitem"):
        body = {"item_id": bad, "domain": "arts", "title": "t"}
        r = http.post("/v1/items", json=body, headers=AUTH)
        assert r.status_code == 422 and r.json()["detail"].startswith("item_id: "), r.text
    r = http.put("/v1/items/new%2Fitem", json={"domain": "arts", "title": "t"}, headers=AUTH)
    assert r.status_code == 422, r.text


def test_ids_with_control_characters_in_the_path_get_the_id_rules_422(
    served: tuple[httpx.Client, MemoryStore],
) -> None:
    # A newline in the path once fell through the router's path converter: a bare 404.
    http, _ = served
    for method, path in [
        ("DELETE", "/v1/users/Q%0Ab"),
        ("GET", "/v1/users/Q%0Ab/history"),
        ("GET", "/v1/users/Q%0Ab/recommendations?domain=arts"),
        ("GET", "/v1/items/x%0Ay"),
        ("GET", "/v1/items/x%0Ay/similar"),
        ("GET", "/v1/items/x%0Ay/image"),
    ]:
        r = http.request(method, path, headers=AUTH)
        assert r.status_code == 422, (method, path, r.status_code, r.text)
        assert "_id: " in r.json()["detail"], r.text


# --- normalisation (finding 7) -------------------------------------------------------
LOOK_ALIKES = [  # (item "arts-1", user "u7") as sent
    ("arts-1 ", "u7 "),
    (" arts-1", " u7"),
    ("\uff41\uff52\uff54\uff53\uff0d\uff11", "\uff55\uff17"),  # fullwidth
    ("arts-1\u3000", "\u00a0u7"),  # ideographic space, no-break space
]


@pytest.mark.parametrize(("item", "user"), LOOK_ALIKES)
def test_look_alike_ids_are_one_id_at_every_entry_point(
    client: TestClient, memory_store: MemoryStore, item: str, user: str
) -> None:
    r = client.post("/v1/items", json={"item_id": item, "domain": "arts"}, headers=AUTH)
    assert r.status_code == 409 and "read-only" in r.json()["detail"], r.text
    assert client.get("/v1/items/" + quote(item, safe="")).json()["item_id"] == "arts-1"
    post_rows(client, [{"user_id": user, "item_id": item}])
    assert memory_store.get_history("u7") == {"arts": ["arts-1"]}
    r = client.post("/v1/recommend", json={"domain": "arts", "history": [item], "n": 3})
    assert r.json()["history"]["items_used"] == 1 and r.json()["history"]["unknown_ids"] == []
    r = client.post("/v1/recommend", json={"domain": "arts", "exclude": [item], "n": 60})
    assert "arts-1" not in [i["item_id"] for i in r.json()["items"]]
    r = client.post("/v1/recommend", json={"domain": "arts", "user_id": user}, headers=AUTH)
    assert r.json()["history"]["items_used"] == 1
    assert client.delete(path_of(user), headers=AUTH).status_code == 204
    assert memory_store.is_erased("u7")


def test_a_registered_item_is_one_item_under_its_look_alikes(client: TestClient) -> None:
    body = {"item_id": "mug-1", "domain": "arts", "title": "mug"}
    assert client.post("/v1/items", json=body, headers=AUTH).status_code == 201
    for alike in ("mug-1 ", "\uff4d\uff55\uff47-1"):
        r = client.post("/v1/items", json={**body, "item_id": alike}, headers=AUTH)
        assert r.status_code == 200 and r.json()["item_id"] == "mug-1", r.text  # a retry
    # case is kept (documented): MUG-1 is another item
    r = client.post("/v1/items", json={**body, "item_id": "MUG-1"}, headers=AUTH)
    assert r.status_code == 201, r.text
    assert client.delete("/v1/items/mug-1%20", headers=AUTH).status_code == 204
    assert client.get("/v1/items/mug-1").status_code == 404


def test_ids_that_are_only_whitespace_are_refused(client: TestClient) -> None:
    rows = [{"user_id": "   ", "item_id": "arts-1"}]
    r = client.post("/v1/interactions", json={"interactions": rows}, headers=AUTH)
    assert r.status_code == 422 and "only whitespace" in r.text, r.text


def test_an_id_stored_before_normalisation_stays_erasable(
    make_settings: Callable[..., Settings],
    engine_factory: FakeEngineFactory,
    memory_store: MemoryStore,
) -> None:
    """An older version stored ids in NFC only ("legacy ", with its space): erasing the id
    as it was sent erases that stored form too."""
    memory_store.add_interactions([Interaction("legacy ", "arts-1", "arts", 1.0)], 200)
    with running(make_settings(), engine_factory, memory_store) as c:
        assert c.delete("/v1/users/legacy%20", headers=AUTH).status_code == 204
    assert memory_store.is_erased("legacy ") and memory_store.get_history("legacy ") == {}
    assert memory_store.is_erased("legacy")


def test_stored_forms_and_check_id() -> None:
    assert check_id(" caf\u0065\u0301\u00a0") == "caf\u00e9"
    assert check_id("\uff2f\uff26\uff26") == "OFF"  # fullwidth -> ASCII, case kept
    assert stored_forms("a") == ["a"]
    assert stored_forms("a ") == ["a", "a "]
    assert stored_forms("\uff41") == ["a", "\uff41"]
    with pytest.raises(ValueError, match="only whitespace"):
        check_id(" \u3000 ")
    with pytest.raises(ValueError, match=r'"\." and "\.\."'):
        check_id("\u2025")  # NFKC: ".."
