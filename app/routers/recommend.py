"""Recommendations: ``POST /v1/recommend`` and ``GET /v1/users/{user_id}/recommendations``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from app.deps import ReadAccess, ServiceDep
from app.routers.common import ERRORS_READ, MALFORMED
from app.schemas import ID_PATTERN, MAX_ID_CHARS, RecommendRequest, RecommendResponse

router = APIRouter(prefix="/v1", tags=["recommend"], dependencies=[ReadAccess])


@router.post("/recommend", responses={**ERRORS_READ, **MALFORMED})
def recommend(body: RecommendRequest, service: ServiceDep) -> RecommendResponse:
    """Top-n items of ``domain`` for a known user and/or an inline history.

    ``user_embedding`` says how the user was represented: ``inductive`` (history in the
    domain), ``cross_domain`` (history only elsewhere) or ``fallback`` (no usable
    history: items come from the configured fallback chain). Every item carries its
    ``source``.
    """
    return service.recommend(**body.model_dump())


@router.get("/users/{user_id}/recommendations", responses=ERRORS_READ)
def user_recommendations(
    user_id: Annotated[str, Path(min_length=1, max_length=MAX_ID_CHARS, pattern=ID_PATTERN)],
    domain: Annotated[str, Query(min_length=1, description="Domain to recommend from.")],
    service: ServiceDep,
    n: Annotated[int | None, Query(ge=1, description="Items wanted (1..max_n).")] = None,
    exclude_seen: bool = True,
    category: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
) -> RecommendResponse:
    """The simple case of ``POST /v1/recommend``: a known user, no inline history."""
    return service.recommend(
        domain=domain, user_id=user_id, n=n, exclude_seen=exclude_seen, category=category
    )
