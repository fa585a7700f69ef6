"""The web console in a real headless Chromium against a real ``micrec serve``.

One tiny real bundle (tests/app/http/ui/browser.py) served by ``micrec serve`` in its own
process with auth on (an API key and an admin key) and the catalogue's pictures; every
page is driven by Playwright through the system Chromium. Screenshots of each view go
to artifacts/test-screenshots/ (git-ignored).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect, sync_playwright

from tests.app.http.ui.browser import (
    SCREENSHOTS,
    ConsoleBundle,
    PageWatch,
    build_console_bundle,
    chromium_path,
)
from tests.reliability.procs import ADMIN_KEY, API_KEY, AUTH, ServiceProcess

VIEWS = ["", "items", "user", "playground", "register", "evaluation"]


@pytest.fixture(scope="module")
def browser_path() -> str:
    return chromium_path()  # first: a missing browser fails before anything is trained


@pytest.fixture(scope="module")
def console(browser_path: str, tmp_path_factory: pytest.TempPathFactory) -> ConsoleBundle:
    return build_console_bundle(tmp_path_factory.mktemp("console"))


@pytest.fixture(scope="module")
def server(console: ConsoleBundle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    state = tmp_path_factory.mktemp("console-state")
    env = {
        "MICREC_BUNDLE_PATH": str(console.bundle),
        "MICREC_STORE_URL": f"sqlite:///{state / 'state.db'}",
        "MICREC_ITEM_IMAGES_DIR": str(console.images),
    }
    with ServiceProcess(env, micrec_serve=True, log_path=state / "serve.log") as proc:
        yield proc.url


@pytest.fixture(scope="module")
def browser(browser_path: str) -> Iterator[Any]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=browser_path, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh browser context per test: an empty sessionStorage (no key)."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    yield context.new_page()
    context.close()


def shot(page: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def use_key(page: Any, key: str = API_KEY) -> None:
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Use key").click()
    expect(page.locator("#key-note")).to_have_text("key set for this tab")


def api(server: str, method: str, path: str, **kw: Any) -> Any:
    r = httpx.request(method, server + path, headers=AUTH, timeout=60, **kw)
    assert r.is_success, r.text
    return r.json()


def test_every_view_loads_without_errors_and_every_input_has_a_label(
    server: str, page: Any
) -> None:
    watch = PageWatch().attach(page)
    page.goto(server + "/ui/")
    use_key(page)  # an API key, not an admin key: the reload state is refused (403)
    model = api(server, "GET", "/v1/model")
    for view in VIEWS:
        watch.reset()
        page.goto(f"{server}/ui/{view}")
        page.wait_for_load_state("networkidle")
        expected = [(403, "/v1/admin/reload")] if view == "" else []
        watch.check(*expected)
        unlabelled = page.evaluate(
            """() => [...document.querySelectorAll('input, select, textarea')]
                 .filter(e => !e.labels.length && !e.getAttribute('aria-label')).map(e => e.id)"""
        )
        assert unlabelled == []
        shot(page, view or "overview")
        if view == "":
            expect(page.locator("#model")).to_contain_text(model["model_version"])
            expect(page.locator("#domains tbody tr")).to_have_count(len(model["domains"]))
            expect(page.locator("#health")).to_contain_text("needs an admin key")
            expect(page.locator("#replica")).to_contain_text("sqlite")
            expect(page.locator("#replica")).to_contain_text("change #")
        elif view == "items":
            expect(page.locator("#results .card")).to_have_count(24)
            # the catalogue has pictures: they are fetched and shown
            expect(page.locator("#results img.picture").first).to_have_attribute(
                "src", re.compile("^blob:")
            )
        elif view == "evaluation":
            for d in model["domains"]:
                expect(page.locator(f'section[data-domain="{d}"] table').first).to_contain_text(
                    "all test users"
                )
            plots = api(server, "GET", "/v1/model/evaluation")["plots"]
            assert "training_curve" in plots
            expect(page.locator("#plots figure img[src^='blob:']")).to_have_count(len(plots))


def test_items_view_searches_and_shows_similar_items(server: str, page: Any) -> None:
    watch = PageWatch().attach(page)
    domain = api(server, "GET", "/v1/model")["domains"][1]
    first = api(server, "GET", f"/v1/items?domain={domain}&limit=1")["items"][0]
    page.goto(f"{server}/ui/items")
    page.get_by_label("Domain").select_option(domain)
    page.get_by_label("Title or id contains").fill(first["item_id"])
    page.get_by_label("Title or id contains").press("Enter")  # the keyboard submits
    expect(page.locator("#results .card")).to_have_count(1)
    page.get_by_role("button", name="Details and similar").click()
    similar = api(server, "GET", f"/v1/items/{first['item_id']}/similar?n=8")["items"]
    cards = page.locator("#detail .grid .card")
    expect(cards).to_have_count(len(similar))
    expect(cards.first).to_have_attribute("data-item", similar[0]["item_id"])
    watch.check()


def test_user_view_refuses_without_a_key_and_shows_a_cross_domain_user_with_one(
    server: str, page: Any
) -> None:
    domains = api(server, "GET", "/v1/model")["domains"]
    item = api(server, "GET", f"/v1/items?domain={domains[0]}&limit=1")["items"][0]
    rows = [{"user_id": "console-user-1", "item_id": item["item_id"]}]
    api(server, "POST", "/v1/interactions", json={"interactions": rows})

    watch = PageWatch().attach(page)
    page.goto(f"{server}/ui/user")
    page.get_by_label("User id").fill("console-user-1")
    page.get_by_role("button", name="Show").click()
    expect(page.locator("#errors")).to_contain_text("missing X-API-Key header")
    expect(page.locator("#history .card")).to_have_count(0)
    expect(page.locator("#recs .column")).to_have_count(0)
    watch.check((401, "/v1/users/console-user-1/history"))

    use_key(page)  # a key change re-asks
    expect(page.locator("#recs .column")).to_have_count(len(domains))
    expect(page.locator("#history .card")).to_have_count(1)
    expect(page.locator("#history .card")).to_have_attribute("data-item", item["item_id"])
    own = page.locator(f'#recs .column[data-domain="{domains[0]}"] .embedding')
    expect(own).to_contain_text(f"from their {domains[0]} history")
    other = page.locator(f'#recs .column[data-domain="{domains[1]}"] .embedding')
    expect(other).to_have_text(f"cross-domain: no {domains[1]} history, served from {domains[0]}")
    answer = api(server, "GET", f"/v1/users/console-user-1/recommendations?domain={domains[1]}&n=6")
    column = page.locator(f'#recs .column[data-domain="{domains[1]}"] .card')
    expect(column).to_have_count(len(answer["items"]))
    expect(column.first).to_have_attribute("data-item", answer["items"][0]["item_id"])
    expect(column.first.locator(".tag")).to_have_text(answer["items"][0]["source"])
    page.wait_for_load_state("networkidle")
    shot(page, "user-with-key")


def test_playground_recommendations_follow_the_clicked_history(server: str, page: Any) -> None:
    watch = PageWatch().attach(page)
    page.goto(f"{server}/ui/playground")
    recs = page.locator("#recs")
    expect(recs.locator(".column").first).to_contain_text("no usable history")
    adds = page.get_by_role("button", name="Add to history")
    picked = [page.locator("#picker .card").nth(i).get_attribute("data-item") for i in (0, 3)]
    adds.nth(0).click()
    expect(recs).to_have_attribute("data-history", picked[0])
    adds.nth(3).click()
    expect(recs).to_have_attribute("data-history", ",".join(picked))
    expect(page.locator("#history li")).to_have_count(2)
    for column in recs.locator(".column").all():
        domain = column.get_attribute("data-domain")
        body = {"history": picked, "domain": domain, "n": 6}
        answer = api(server, "POST", "/v1/recommend", json=body)
        shown = [c.get_attribute("data-item") for c in column.locator(".card").all()]
        assert shown == [it["item_id"] for it in answer["items"]]
        assert answer["user_embedding"] in ("inductive", "cross_domain")
    page.wait_for_load_state("networkidle")
    shot(page, "playground-with-history")
    watch.check()


def test_a_registration_through_the_form_appears_in_the_items_view_as_text(
    server: str, page: Any, console: ConsoleBundle
) -> None:
    watch = PageWatch().attach(page)
    domain = api(server, "GET", "/v1/model")["domains"][0]
    title = 'mug <script>window.__xss=1</script><img src=x onerror="window.__xss=2">'
    page.goto(f"{server}/ui/register")
    use_key(page)
    page.get_by_label("Item id").fill("console-mug-1")
    page.get_by_label("Domain").select_option(domain)
    page.get_by_label("Title").fill(title)
    page.get_by_label("Categories (separate with |)").fill("Kitchen|Drinkware")
    picture: Path = next(iter(sorted(console.images.iterdir())))
    page.get_by_label("Picture (JPEG, PNG, WebP or GIF)").set_input_files(str(picture))
    page.get_by_role("button", name="Register").click()
    expect(page.locator("#registered")).to_have_text("Registered (201 Created)", timeout=60_000)
    expect(page.locator("#result .grid .card").first).to_be_visible()
    page.get_by_role("link", name="See it in the Items view").click()
    card = page.locator('#results .card[data-item="console-mug-1"]')
    expect(card.locator("h3")).to_have_text(title)  # shown as text, never parsed
    expect(card).to_contain_text("Kitchen · Drinkware")
    # the uploaded picture, as the thumbnail the store keeps
    expect(card.locator("img.picture")).to_have_attribute("src", re.compile("^blob:"))
    expect(page.locator("#detail")).to_contain_text("registered through the API")
    assert page.evaluate("window.__xss") is None
    assert page.locator("main script, main img[src='x']").count() == 0
    assert api(server, "GET", "/v1/items/console-mug-1")["title"] == title
    page.wait_for_load_state("networkidle")
    watch.check()


def test_overview_charts_the_online_metrics_of_each_version(server: str, page: Any) -> None:
    watch = PageWatch().attach(page)
    model = api(server, "GET", "/v1/model")
    domain = model["domains"][0]
    answer = api(
        server, "POST", "/v1/recommend", json={"domain": domain, "n": 4, "session_id": "s-ui"}
    )
    rec_id = answer["recommendation_id"]
    # the record is written by the worker's recording thread (record_flush_s)
    deadline = time.monotonic() + 30
    while httpx.get(f"{server}/v1/recommendations/{rec_id}", headers=AUTH).status_code != 200:
        assert time.monotonic() < deadline, "the record was never written"
        time.sleep(0.1)
    item = answer["items"][1]["item_id"]
    events = [
        {"recommendation_id": rec_id, "item_id": item, "event": e} for e in ("impression", "click")
    ]
    assert api(server, "POST", "/v1/feedback", json={"events": events})["accepted"] == 2
    page.goto(server + "/ui/")
    use_key(page, ADMIN_KEY)
    row = page.locator(f'#online tbody tr[data-version="{model["model_version"]}"]')
    expect(row.first).to_contain_text(domain)
    series = page.locator(
        f'#online-chart svg polyline.series[data-version="{model["model_version"]}"]'
        f'[data-domain="{domain}"]'
    )
    expect(series).to_have_count(1)
    expect(page.locator("#online-chart .legend")).to_contain_text(model["model_version"])
    shot(page, "overview-online")
    watch.check((401, "/v1/admin/reload"))  # the first load, before the key was typed
