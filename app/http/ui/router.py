"""Routes of the console: one page per view, the static assets, nothing else."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

HERE = Path(__file__).parent
PAGES = {
    "": ("overview", "Overview"),
    "items": ("items", "Items"),
    "user": ("user", "User"),
    "playground": ("playground", "Playground"),
    "register": ("register", "Register"),
    "evaluation": ("evaluation", "Evaluation"),
}
"""URL below /ui/ -> (template and script name, title)."""

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

templates = Jinja2Templates(directory=HERE / "templates")
router = APIRouter(prefix="/ui", include_in_schema=False)


def _page(path: str, name: str, title: str) -> None:
    async def page(request: Request) -> HTMLResponse:
        api_docs = request.app.state.settings.api_docs
        context = {"page": name, "title": title, "pages": PAGES, "api_docs": api_docs}
        return templates.TemplateResponse(request, f"{name}.html", context, headers=HEADERS)

    router.add_api_route(f"/{path}", page, methods=["GET"], name=f"ui-{name}")


for _path, (_name, _title) in PAGES.items():
    _page(_path, _name, _title)


@router.get("")
async def ui_root() -> Response:
    return RedirectResponse("/ui/")


def install(app: FastAPI) -> None:
    """Serve the console on ``app`` (main.py calls this when ``console`` is on)."""
    app.include_router(router)
    app.mount("/ui/static", StaticFiles(directory=HERE / "static"), name="ui-static")
