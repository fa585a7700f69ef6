"""The interactive API pages ``/docs`` (Swagger UI) and ``/redoc``, only with ``api_docs``.

FastAPI's pages load their scripts and styles from a CDN (cdn.jsdelivr.net): no Python
package here ships those assets, and downloading them at run time is out of the question.
A page running a third party's script on the service's origin is a risk for the console,
whose key lives in the same origin's browser tab, so the pages are off by default (the
schema at ``/openapi.json`` always stays) and ``make run`` (local use) turns them on. When
on, each page carries a Content-Security-Policy that allows scripts from the CDN host and
its own inline script (by hash) only, requests to this origin only, and no framing.
"""

from __future__ import annotations

import base64
import hashlib
import re

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse

CDN = "https://cdn.jsdelivr.net"
FONTS = "https://fonts.googleapis.com https://fonts.gstatic.com"
FAVICON = "https://fastapi.tiangolo.com"
_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.S)


def csp_for(html: str) -> str:
    """The Content-Security-Policy of one generated page: its inline scripts by sha256."""
    hashes = [
        "'sha256-" + base64.b64encode(hashlib.sha256(s.encode()).digest()).decode() + "'"
        for s in _INLINE_SCRIPT.findall(html)
    ]
    return "; ".join(
        [
            "default-src 'none'",
            " ".join(["script-src", CDN, *hashes]),
            # Swagger UI and ReDoc set inline styles on their elements
            f"style-src {CDN} {FONTS} 'unsafe-inline'",
            f"font-src {FONTS} data:",
            f"img-src 'self' data: {CDN} {FAVICON}",
            "connect-src 'self'",
            "worker-src blob:",  # ReDoc's search worker
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ]
    )


def _page(page: HTMLResponse) -> HTMLResponse:
    html = bytes(page.body).decode()
    headers = {
        "Content-Security-Policy": csp_for(html),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }
    return HTMLResponse(html, headers=headers)


def install(app: FastAPI) -> None:
    """Serve ``/docs`` and ``/redoc`` (create the app with ``docs_url=None`` and
    ``redoc_url=None``; main.py calls this when ``api_docs`` is on)."""
    schema = app.openapi_url or "/openapi.json"
    swagger = _page(get_swagger_ui_html(openapi_url=schema, title=f"{app.title} - API docs"))
    redoc = _page(get_redoc_html(openapi_url=schema, title=f"{app.title} - ReDoc"))

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return swagger

    @app.get("/redoc", include_in_schema=False)
    async def redoc_page() -> HTMLResponse:
        return redoc
