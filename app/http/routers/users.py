"""``DELETE /v1/users/{user_id}``: erase a user (app/users/erasure.py); ``GET
/v1/users/{user_id}/history``: what recommendations use as their history.

User ids may contain "/" (app/api/ids.py), so these routes take the rest of the path as the id
(``{user_id:id}``): ``/v1/users/acme%2F42`` and ``/v1/users/acme/42`` both name ``acme/42``,
and ``/v1/users/a/b/history`` is the history of ``a/b`` (the fixed suffix ends the id)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, status

from app.api.ids import Id, RawId, stored_forms
from app.api.schemas_console import UserHistory
from app.http.deps import BrowserDep, ErasureDep, UserReadAccess, WriteOrAdminAccess
from app.http.routers.common import AUTH, ERRORS_READ, INVALID, NOT_READY

router = APIRouter(prefix="/v1", tags=["users"])


@router.delete(
    "/users/{user_id:id}",
    status_code=status.HTTP_204_NO_CONTENT,
    dependencies=[WriteOrAdminAccess],
    responses={**AUTH, **INVALID, **NOT_READY},
)
def erase_user(user_id: Annotated[RawId, Path()], erasure: ErasureDep) -> None:
    """Erase a user (API key or admin key): their stored history and their share of the
    popularity counts are deleted, and the erasure is recorded so that their bundle
    (training) history is no longer used, on every replica, and exports and retraining
    leave them out. 204 whether or not the user existed, and on every repeat. The id is
    normalised like every id; the form an older version stored it in (``"acme "``) is
    erased too."""
    for form in stored_forms(user_id):
        erasure.erase(form)


@router.get("/users/{user_id:id}/history", dependencies=[UserReadAccess], responses=ERRORS_READ)
def user_history(user_id: Annotated[Id, Path()], browser: BrowserDep) -> UserHistory:
    """The user's history by domain as a recommend uses it: the bundle's (training)
    history and what POST /v1/interactions stored (API key needed unless
    ``open_user_reads``; known and unknown users get the same 401)."""
    return browser.history(user_id)
