"""Recommendations: ``POST /v1/recommend`` and ``GET /v1/users/{user_id}/recommendations``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response, Security

from app.api.ids import Id
from app.api.schemas import RecommendRequest, RecommendResponse
from app.http.deps import ReadAccess, RecommenderDep, SettingsDep, UserReadAccess
from app.http.routers.common import ERRORS_READ, MALFORMED
from app.http.security import api_key_header, check_user_read

router = APIRouter(prefix="/v1", tags=["recommend"], dependencies=[ReadAccess])


def _json(answer: RecommendResponse) -> Response:
    # Serialised here by pydantic-core in one call: returning the model would have FastAPI
    # validate it again against the response model and then serialise it.
    return Response(answer.model_dump_json(), media_type="application/json")


# No anyio thread-pool hop: the store read is awaited on the event loop
# (app/store/redis_async.py) and the model work goes to the worker's model thread, which
# takes every waiting request as one batch (``model_thread``; or inline on the loop).
# Measured side by side in docs/results/serve-steps/hotpath.md.
@router.post("/recommend", response_model=RecommendResponse, responses={**ERRORS_READ, **MALFORMED})
async def recommend(
    body: RecommendRequest,
    recommender: RecommenderDep,
    settings: SettingsDep,
    key: Annotated[str | None, Security(api_key_header)],
) -> Response:
    """Top-n items of ``domain`` for a known user and/or an inline history, or for a
    visitor's ``query`` (a text and/or a picture instead of a history).

    ``user_embedding`` says how the user was represented: ``inductive`` (history in the
    domain), ``cross_domain`` (history only elsewhere), ``query`` (content match of the
    query + popularity) or ``fallback`` (no usable history: items come from the configured
    fallback chain). Every item carries its ``source``. With ``user_id`` an API key is
    needed (unless ``open_user_reads``).
    """
    if body.user_id is not None:
        check_user_read(key, settings)
    return _json(await recommender.recommend_async(body))


@router.get(
    "/users/{user_id:id}/recommendations",  # ids may hold "/" (app/api/ids.py)
    response_model=RecommendResponse,
    responses=ERRORS_READ,
    dependencies=[UserReadAccess],
)
async def user_recommendations(
    user_id: Annotated[Id, Path()],
    domain: Annotated[Id, Query(description="Domain to recommend from.")],
    recommender: RecommenderDep,
    n: Annotated[int | None, Query(ge=1, description="Items wanted (1..max_n).")] = None,
    exclude_seen: bool = True,
    category: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
) -> Response:
    """The simple case of ``POST /v1/recommend``: a known user, no inline history (API
    key needed unless ``open_user_reads``)."""
    request = RecommendRequest(
        domain=domain, user_id=user_id, n=n, exclude_seen=exclude_seen, category=category
    )
    return _json(await recommender.recommend_async(request))
