"""Request and response bodies of feedback on served recommendations (POST /v1/feedback,
GET /v1/recommendations/{id}) and of the online metrics (GET /v1/stats, the console)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from app.api.ids import MAX_LIST_ITEMS, Id
from app.api.schemas import _Strict

EVENT_TYPE_CHARS = 32


class FeedbackEventIn(_Strict):
    recommendation_id: str = Field(
        min_length=1, max_length=64, description="The recommendation_id of a recommend answer."
    )
    item_id: Id = Field(description="An item of that answer.")
    event: str = Field(
        min_length=1,
        max_length=EVENT_TYPE_CHARS,
        description="One of feedback_events (default impression, click, add-to-cart, purchase).",
    )
    timestamp: float | None = Field(
        default=None,
        ge=0,
        allow_inf_nan=False,
        description="Unix seconds, at most max_timestamp_skew_s past the server's clock; "
        "default now (the time of the interaction a positive event becomes).",
    )


class FeedbackRequest(_Strict):
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [
                {
                    "events": [
                        {
                            "recommendation_id": "9f2c4e0a7b1d4c3e8a6f5b2d1c0e9f8a",
                            "item_id": "o12",
                            "event": "impression",
                        },
                        {
                            "recommendation_id": "9f2c4e0a7b1d4c3e8a6f5b2d1c0e9f8a",
                            "item_id": "o12",
                            "event": "click",
                        },
                    ]
                }
            ]
        },
    )

    events: list[FeedbackEventIn] = Field(
        min_length=1, max_length=MAX_LIST_ITEMS, fail_fast=True, description="At most max_batch."
    )


class FeedbackResponse(BaseModel):
    accepted: int = Field(description="Events counted now.")
    duplicates: int = Field(
        description="Events already counted (the same type on the same item of the same "
        "recommendation): a retry changes nothing."
    )
    interactions: int = Field(
        description="Positive events of named users stored as interactions (their history)."
    )


class ServedItem(BaseModel):
    rank: int
    item_id: str
    source: str


class FeedbackSeen(BaseModel):
    rank: int
    event: str


class RecommendationOut(BaseModel):
    recommendation_id: str
    user_id: str | None
    session_id: str | None
    domain: str
    model_version: str
    created_at: float
    items: list[ServedItem]
    feedback: list[FeedbackSeen] = Field(description="Events counted, by rank.")


class HourPoint(BaseModel):
    hour: int = Field(description="Start of the hour the recommendations were served (unix s).")
    recommendations: int
    impressions: int
    clicks: int
    hits: int
    observed: int
    ctr: float


class OnlineMetricsOut(BaseModel):
    """One bundle version in one domain: app/feedback/metrics.py defines each metric."""

    model_version: str
    domain: str
    recommendations: int = Field(description="Served lists recorded.")
    observed: int = Field(description="Of those, lists with at least one event.")
    impressions: int
    clicks: int = Field(description="Items with a positive event (once per item and list).")
    hits: int
    positives: dict[str, int] = Field(description="Positive events by type.")
    events: dict[str, int] = Field(description="Events by type.")
    ctr: float = Field(description="clicks / impressions.")
    ctr_ci: tuple[float, float] = Field(description="95 % Wilson interval.")
    hit_rate: float = Field(description="hits / observed lists.")
    hit_rate_ci: tuple[float, float] = Field(description="95 % Wilson interval.")
    mrr: float = Field(description="Mean over observed lists of 1 / best clicked rank.")
    mrr_ci: tuple[float, float] = Field(description="95 % normal-approximation interval.")
    coverage: float = Field(description="Distinct items shown / catalogue size.")
    items_shown: int
    catalogue_size: int
    hourly: list[HourPoint] = Field(
        default_factory=list, description="Per hour served (the console's chart), oldest first."
    )
