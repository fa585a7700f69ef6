"""Recommendations: ``POST /v1/recommend`` and ``GET /v1/users/{user_id}/recommendations``."""

from __future__ import annotations

from functools import partial
from typing import Annotated

from fastapi import APIRouter, Path, Query, Security
from starlette.concurrency import run_in_threadpool

from app.deps import ReadAccess, ServiceDep, SettingsDep, UserReadAccess
from app.ids import Id
from app.routers.common import ERRORS_READ, MALFORMED
from app.schemas import RecommendRequest, RecommendResponse
from app.security import api_key_header, check_user_read

router = APIRouter(prefix="/v1", tags=["recommend"], dependencies=[ReadAccess])


# ``async def`` + one explicit hop: a plain ``def`` handler costs two thread-pool round
# trips per request (the handler, then FastAPI's response validation), and each wake-up of
# the event loop from a worker thread was ~20 % of a request's CPU (bench/serve.py).
# The work stays off the event loop because a known user's history is a blocking store
# read that must not stall every other request when the store is slow.
@router.post("/recommend", responses={**ERRORS_READ, **MALFORMED})
async def recommend(
    body: RecommendRequest,
    service: ServiceDep,
    settings: SettingsDep,
    key: Annotated[str | None, Security(api_key_header)],
) -> RecommendResponse:
    """Top-n items of ``domain`` for a known user and/or an inline history.

    ``user_embedding`` says how the user was represented: ``inductive`` (history in the
    domain), ``cross_domain`` (history only elsewhere) or ``fallback`` (no usable
    history: items come from the configured fallback chain). Every item carries its
    ``source``. With ``user_id`` an API key is needed (unless ``open_user_reads``).
    """
    if body.user_id is not None:
        check_user_read(key, settings)
    return await run_in_threadpool(partial(service.recommend, **body.model_dump()))


@router.get(
    "/users/{user_id}/recommendations", responses=ERRORS_READ, dependencies=[UserReadAccess]
)
async def user_recommendations(
    user_id: Annotated[Id, Path()],
    domain: Annotated[Id, Query(description="Domain to recommend from.")],
    service: ServiceDep,
    n: Annotated[int | None, Query(ge=1, description="Items wanted (1..max_n).")] = None,
    exclude_seen: bool = True,
    category: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
) -> RecommendResponse:
    """The simple case of ``POST /v1/recommend``: a known user, no inline history (API
    key needed unless ``open_user_reads``)."""
    return await run_in_threadpool(
        partial(
            service.recommend,
            domain=domain,
            user_id=user_id,
            n=n,
            exclude_seen=exclude_seen,
            category=category,
        )
    )
