"""Response models of the read endpoints made for browsing (the web console uses them; any
client may): the item list, a user's history, the bundle's evaluation, service stats."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from app.api.schemas import CanaryStatus, StoredHistory
from app.api.schemas_feedback import OnlineMetricsOut


class ItemSummary(BaseModel):
    item_id: str
    domain: str
    title: str
    categories: list[str]
    origin: Literal["bundle", "api"]
    degree: int = Field(
        description="Training interactions of the item in the bundle's graph (0 for "
        "registered items)."
    )
    interactions: int = Field(
        description="Users who interacted with it through POST /v1/interactions (popularity)."
    )
    image: bool = Field(description="GET /v1/items/{id}/image has a picture of it.")


class ItemPage(BaseModel):
    domain: str | None
    total: int = Field(description="Items matching the query (all pages).")
    offset: int
    items: list[ItemSummary]


class UserHistory(BaseModel):
    user_id: str
    known_user: bool
    stored: StoredHistory = Field(
        description="ok: the store was read; unavailable: bundle history only."
    )
    domains: dict[str, list[str]] = Field(
        description="domain -> item ids, oldest first: the bundle's (training) history, "
        "then what POST /v1/interactions added. Empty for an erased user."
    )


class EvaluationReport(BaseModel):
    model_version: str
    metrics: dict[str, Any] = Field(
        description="The bundle manifest's training summary and test metrics (domain -> "
        "slice -> metric), degree buckets included (slices deg_*)."
    )
    baselines: dict[str, Any] | None = Field(
        None,
        description="evaluation/results.json when the bundle has one (`micrec evaluate "
        "--baselines`): ranker -> domain -> slice -> metric.",
    )
    history: list[dict[str, Any]] = Field(
        default_factory=list, description="Training history, one row per epoch."
    )
    plots: list[str] = Field(
        description="Names served by GET /v1/model/evaluation/plots/{name} (PNG)."
    )


class LatencySummary(BaseModel):
    route: str
    method: str
    count: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None


class ReplicaInfo(BaseModel):
    store: str = Field(description='The store kind: "sqlite" or "redis" (never its address).')
    feed_seq: int | None = Field(
        description="Change-feed position this replica has applied (None while loading)."
    )
    replayed: bool | None = Field(
        description="Registered items replayed from the store (false: store was down at load)."
    )
    sync_interval_s: float = Field(description="How often it follows other replicas' changes.")
    popularity_refresh_s: float


class ServiceStats(BaseModel):
    replica: ReplicaInfo | None = None
    requests: int
    requests_by_status: dict[str, int] = Field(description="2xx, 3xx, 4xx, 5xx.")
    latency: list[LatencySummary] = Field(
        description="Per route, estimated from the latency histogram's buckets (as "
        "Prometheus' histogram_quantile does); busiest routes first."
    )
    recommendations: dict[str, int] = Field(description="By user_embedding.")
    items_by_source: dict[str, int]
    fallbacks: int = Field(description="Responses filled (wholly or partly) by a fallback.")
    registrations: int = Field(description="Items created (201) by POST/PUT /v1/items.")
    reloads: dict[str, int]
    store_errors: int
    online: list[OnlineMetricsOut] | None = Field(
        default=None,
        description="Online metrics per bundle version and domain, from the counters every "
        "replica shares in the store (None: the store could not be read).",
    )
    canary: CanaryStatus | None = Field(
        default=None, description="The canary running now, if any (app/lifecycle/canary.py)."
    )
