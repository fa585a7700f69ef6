"""``POST /v1/feedback``: events on served recommendations (app/feedback/events.py);
``GET /v1/recommendations/{recommendation_id}``: a served list and its feedback."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response, Security

from app.api.ids import key_source
from app.api.schemas_feedback import FeedbackRequest, FeedbackResponse, RecommendationOut
from app.http.deps import (
    FeedbackDep,
    IdempotencyDep,
    KeyedRequestDep,
    UserReadAccess,
    WriteAccess,
)
from app.http.routers.common import ERRORS_READ, ERRORS_WRITE, NOT_FOUND, answer_response
from app.http.security import api_key_header

router = APIRouter(prefix="/v1", tags=["feedback"])


@router.post(
    "/feedback",
    response_model=FeedbackResponse,
    dependencies=[WriteAccess],
    responses={**ERRORS_WRITE, 404: {"description": "Unknown or expired recommendation_id"}},
)
def add_feedback(
    keyed: KeyedRequestDep,
    body: FeedbackRequest,
    feedback: FeedbackDep,
    idempotency: IdempotencyDep,
    api_key: Annotated[str | None, Security(api_key_header)],
) -> FeedbackResponse | Response:
    """Events (impression, click, add-to-cart, purchase: ``feedback_events``) on the items
    of served recommendations, by their ``recommendation_id``. The batch is checked whole
    before anything is written: an unknown or expired id is a 404, an item that was not in
    that recommendation or an unknown event type a 422 naming the row. An event already
    counted (same type, item and recommendation) is a duplicate and changes nothing; with
    an Idempotency-Key a retry gets the first answer. Positive events of a named user's
    recommendation are stored as interactions too (history, popularity, retraining)."""
    checked = feedback.check(body.events)

    def write() -> tuple[int, FeedbackResponse]:
        return 200, feedback.apply(checked, source=key_source(api_key))

    if keyed is not None:
        return answer_response(idempotency.run(keyed, write, checked.users))
    return write()[1]


@router.get(
    "/recommendations/{recommendation_id}",
    response_model=RecommendationOut,
    dependencies=[UserReadAccess],
    responses={**ERRORS_READ, **NOT_FOUND},
)
def get_recommendation(
    recommendation_id: Annotated[str, Path(min_length=1, max_length=64)],
    feedback: FeedbackDep,
) -> RecommendationOut:
    """A served list (user or session, items with rank and source, model version, time)
    and the events counted on it (API key needed unless ``open_user_reads``, as for every
    read about a user; 404 once expired or erased)."""
    return feedback.recommendation(recommendation_id)
