"""The console's pages over HTTP (no browser): served, shells without data, a strict
Content-Security-Policy, off with ``console=false``; its scripts never parse API text as
HTML. The browser side: test_console_browser.py."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.http.ui.router import HERE, PAGES
from app.settings import Settings
from tests.app.conftest import running
from tests.app.fakes import FakeEngineFactory, MemoryStore
from tests.app.http.ui import browser


def test_every_page_is_a_shell_with_a_strict_policy(client: TestClient) -> None:
    for path, (name, title) in PAGES.items():
        r = client.get(f"/ui/{path}")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        csp = r.headers["content-security-policy"]
        assert "script-src 'self';" in csp and "object-src 'none'" in csp
        assert f"<title>{title} · MICRec console</title>" in r.text
        assert f'src="/ui/static/{name}.js"' in r.text
        assert "<script>" not in r.text  # no inline script: the policy would block it
        assert "arts-" not in r.text  # no catalogue or user data in the page itself
    assert client.get("/ui", follow_redirects=False).headers["location"] == "/ui/"


def test_static_assets_are_served(client: TestClient) -> None:
    for name in {n for n, _ in PAGES.values()} | {"common"}:
        r = client.get(f"/ui/static/{name}.js")
        assert r.status_code == 200 and "javascript" in r.headers["content-type"]
    assert client.get("/ui/static/console.css").status_code == 200
    assert client.get("/ui/static/../router.py").status_code == 404


def test_scripts_set_text_never_html() -> None:
    for script in (HERE / "static").glob("*.js"):
        text = script.read_text()
        found = re.findall(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\(", text)
        assert found == [], script.name


def test_console_off(
    make_settings: Callable[..., Settings], engine_factory: FakeEngineFactory, tmp_path: Path
) -> None:
    with running(make_settings(console=False), engine_factory, MemoryStore()) as c:
        assert c.get("/ui/").status_code == 404
        assert c.get("/ui/static/common.js").status_code == 404
        assert c.get("/v1/items", params={"domain": "arts"}).status_code == 200


def test_a_missing_chromium_fails_the_browser_tests_unless_skipping_is_asked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(browser.shutil, "which", lambda name: None)
    monkeypatch.delenv(browser.SKIP_ENV, raising=False)
    with pytest.raises(pytest.fail.Exception, match="make system-deps"):
        browser.chromium_path()
    monkeypatch.setenv(browser.SKIP_ENV, "1")
    with pytest.raises(pytest.skip.Exception):
        browser.chromium_path()
