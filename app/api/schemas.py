"""Request and response bodies of the v1 API (pydantic), with OpenAPI examples.

Bounds that depend on settings (``n <= max_n``, batch size, text length) are checked by
the service at request time; the static bounds here (ids, positivity) are fixed.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from app.api.ids import ID_PATTERN, ITEM_ID_PATTERN, MAX_ID_CHARS, MAX_LIST_ITEMS, Id, ItemId

__all__ = ["ID_PATTERN", "ITEM_ID_PATTERN", "MAX_ID_CHARS"]

MAX_TEXT_CHARS = 100_000
"""Schema ceiling of a text field; max_text_chars (checked by the service) is lower."""
MAX_CATEGORIES = 100
MAX_CATEGORY_CHARS = 200
UNKNOWN_KEYS_SHOWN = 3

Source = Literal["model", "query", "popular", "latest"]
UserEmbeddingMethod = Literal["inductive", "cross_domain", "fallback", "query"]
StoredHistory = Literal["ok", "unavailable", "not_requested"]

Category = Annotated[str, StringConstraints(max_length=MAX_CATEGORY_CHARS)]


def _require_utf8(value: Any) -> Any:
    """Refuse text that cannot be encoded as UTF-8 (lone surrogates such as ``"\\ud800"``,
    which JSON escapes can carry): it could be neither stored nor sent back in a response."""
    for text in value if isinstance(value, list) else [value]:
        if isinstance(text, str):
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError("text is not valid Unicode (lone surrogate)") from None
    return value


class _Strict(BaseModel):
    # Unknown fields are errors: a misspelt "exclude_sen" must not silently do nothing.
    # Strict: "n": true or "3" and "exclude_seen": "yes" are errors, not silently coerced.
    model_config = ConfigDict(extra="forbid", strict=True)

    _utf8 = field_validator("*")(_require_utf8)

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        # One error for any number of unknown keys, before any field is validated (pydantic
        # would report, and the client receive, one error per key).
        if isinstance(data, dict):
            unknown = [k for k in data if k not in cls.model_fields]
            if unknown:
                shown = ", ".join(repr(str(k)[:40]) for k in unknown[:UNKNOWN_KEYS_SHOWN])
                more = len(unknown) - UNKNOWN_KEYS_SHOWN
                tail = f" and {more} more" if more > 0 else ""
                raise ValueError(f"unknown field(s) {shown}{tail}")
        return data


# --- recommend ---------------------------------------------------------------------------
class QueryIn(_Strict):
    """A visitor with no history, started from what they typed and/or showed: a free text
    and/or a picture, matched in the model's content space (``GET /v1/model``
    ``query_modalities`` says which the model takes)."""

    text: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_TEXT_CHARS,
        description="Free text, e.g. a product name (at most max_text_chars characters).",
    )
    image_base64: str | None = Field(
        default=None,
        description="A picture's file bytes, base64 (a data: URL prefix is accepted); the "
        "limits of item images apply (max_image_bytes, max_image_pixels, aspect ratio).",
    )


class RecommendRequest(_Strict):
    """Who to recommend for: a known ``user_id`` (stored history), an inline ``history``,
    both (merged), a ``query`` (a text and/or a picture instead of a history), or none of
    them (anonymous: the fallback chain answers)."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [
                {"user_id": "u42", "domain": "office", "n": 10},
                {
                    "history": ["a17", "o3"],
                    "domain": "office",
                    "n": 5,
                    "exclude": ["o9"],
                    "category": "office products",
                },
                {"query": {"text": "red enamel mug"}, "domain": "kitchen", "n": 5},
            ]
        },
    )

    user_id: Id | None = Field(
        default=None, description="A known user (needs X-API-Key unless open_user_reads)."
    )
    history: list[Id] = Field(
        default_factory=list,
        max_length=MAX_LIST_ITEMS,
        fail_fast=True,  # the first bad element ends validation: no error per element
        description="Item ids the user interacted with, any domain (at most max_history).",
    )
    domain: Id = Field(description="Domain to recommend items from.")
    n: int | None = Field(
        default=None, ge=1, description="Items wanted (1..max_n; default default_n)."
    )
    exclude_seen: bool = Field(default=True, description="Leave out items in the user's history.")
    exclude: list[Id] = Field(
        default_factory=list,
        max_length=MAX_LIST_ITEMS,
        fail_fast=True,  # the first bad element ends validation: no error per element
        description="Item ids never to return (at most max_history).",
    )
    category: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="Only items whose categories start with this (case-insensitive).",
    )
    session_id: Id | None = Field(
        default=None,
        description="An anonymous client session the served list is recorded under when no "
        "user_id is given (feedback then counts in the online metrics but writes no history).",
    )
    query: QueryIn | None = Field(
        default=None,
        description="Start from a text and/or a picture instead of a history (not with "
        "user_id or history); the answer's items have source 'query'.",
    )


class RecommendedItem(BaseModel):
    item_id: str
    score: float = Field(
        description="model: inner product; query: content match + prior (a query's score); "
        "popular: interaction count; latest: registration time (unix s). Comparable only "
        "within one source."
    )
    source: Source


class HistoryReport(BaseModel):
    """Which history the recommendation used (so clients can see degraded answers)."""

    stored: StoredHistory = Field(
        description="Stored history lookup: ok, unavailable (store down: inline history "
        "only), or not_requested (no user_id)."
    )
    known_user: bool = Field(description="The user has bundle or stored history.")
    items_used: int = Field(description="History items the user embedding was built from.")
    unknown_ids: list[str] = Field(
        default_factory=list, description="Inline history ids not in the catalogue (ignored)."
    )


class RecommendResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "domain": "office",
                    "n": 2,
                    "model_version": "micrec-20260101-0123456789",
                    "user_embedding": "cross_domain",
                    "items": [
                        {"item_id": "o12", "score": 3.21, "source": "model"},
                        {"item_id": "o7", "score": 3.02, "source": "model"},
                    ],
                    "history": {
                        "stored": "ok",
                        "known_user": True,
                        "items_used": 4,
                        "unknown_ids": [],
                    },
                    "warnings": [],
                    "cached": False,
                    "recommendation_id": "9f2c4e0a7b1d4c3e8a6f5b2d1c0e9f8a",
                }
            ]
        }
    )

    domain: str
    n: int = Field(description="Items requested (the list may be shorter).")
    model_version: str
    user_embedding: UserEmbeddingMethod
    items: list[RecommendedItem]
    history: HistoryReport
    warnings: list[str] = Field(default_factory=list)
    cached: bool = Field(
        default=False,
        description="The items came from this user's precomputed top-N list (the same "
        "items a live computation gives for the same state).",
    )
    recommendation_id: str | None = Field(
        default=None,
        description="The id POST /v1/feedback attributes events to (None when "
        "record_recommendations is off).",
    )


# --- interactions ------------------------------------------------------------------------
class InteractionIn(_Strict):
    user_id: Id
    item_id: Id
    domain: Id | None = Field(
        default=None, description="Checked against the item's domain if given."
    )
    timestamp: float | None = Field(
        default=None,
        ge=0,
        allow_inf_nan=False,
        description="Unix seconds, at most max_timestamp_skew_s (a day) past the server's "
        "clock; default now.",
    )


class InteractionsRequest(_Strict):
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [
                {
                    "interactions": [
                        {"user_id": "u42", "item_id": "o12", "domain": "office"},
                        {"user_id": "u42", "item_id": "new-mug-1", "timestamp": 1767225600},
                    ]
                }
            ]
        },
    )

    interactions: list[InteractionIn] = Field(
        min_length=1,
        max_length=MAX_LIST_ITEMS,
        fail_fast=True,
        description="At most max_batch rows.",
    )


class RejectedRow(BaseModel):
    index: int = Field(description="Position of the row in the request.")
    item_id: str
    reason: str


class InteractionsResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "accepted": 1,
                    "rejected": [{"index": 1, "item_id": "nope", "reason": "unknown item_id"}],
                }
            ]
        }
    )

    accepted: int
    rejected: list[RejectedRow]


# --- items -------------------------------------------------------------------------------
class ItemIn(_Strict):
    """A cold-start item. Needs at least one of text (title/categories/description) or an
    image to be embedded from content; an item with neither gets the model's generic
    new-item vector."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [
                {
                    "item_id": "new-mug-1",
                    "domain": "kitchen",
                    "title": "red enamel mug",
                    "categories": ["kitchen", "drinkware"],
                    "description": "12 oz, dishwasher safe",
                }
            ]
        },
    )

    item_id: ItemId
    domain: Id
    title: str = Field(default="", max_length=MAX_TEXT_CHARS)
    categories: list[Category] = Field(
        default_factory=list, max_length=MAX_CATEGORIES, fail_fast=True
    )
    description: str = Field(default="", max_length=MAX_TEXT_CHARS)
    image_base64: str | None = Field(
        default=None, description="Image file bytes, base64 (a data: URL prefix is accepted)."
    )

    @field_validator("categories", mode="before")
    @classmethod
    def _categories_from_string(cls, value: Any) -> Any:
        # Accept "a|b" as well as ["a", "b"] (multipart forms and the store use strings).
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return [c.strip() for v in value for c in v.split("|") if c.strip()]
        return value


class ItemUpdate(ItemIn):
    """PUT body: ``item_id`` may be omitted (the path names the item)."""

    item_id: ItemId | None = None  # type: ignore[assignment]


class ItemOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "item_id": "new-mug-1",
                    "domain": "kitchen",
                    "title": "red enamel mug",
                    "categories": ["kitchen", "drinkware"],
                    "description": "12 oz, dishwasher safe",
                    "origin": "api",
                    "modalities": ["text"],
                    "created_at": 1767225600.0,
                    "updated_at": 1767225600.0,
                }
            ]
        }
    )

    item_id: str
    domain: str
    title: str
    categories: list[str]
    description: str = ""
    origin: Literal["bundle", "api"] = Field(
        description="bundle: shipped with the model (read-only); api: registered."
    )
    modalities: list[str] = Field(
        default_factory=list, description="Content modalities the item was embedded from."
    )
    created_at: float | None = None
    updated_at: float | None = None


class SimilarResponse(BaseModel):
    item_id: str
    domain: str
    model_version: str
    items: list[RecommendedItem]


# --- model / admin / probes --------------------------------------------------------------
class IndexCalibrationInfo(BaseModel):
    target_recall: float
    recall: float = Field(description="recall@k vs exact search at the chosen nprobe.")
    k: int
    queries: int = Field(description="Bundle users the recall was measured on.")
    exact_instead: bool = Field(
        description="The target needed more than half of the IVF lists, so the domain is "
        "served by an exact index (kind flat) instead."
    )


class IndexInfo(BaseModel):
    kind: str = Field(
        description='"flat" (exact), "ivf" (approximate) or "ivf-pq" (approximate, more than '
        "2M items: product-quantised codes, candidates re-scored exactly)."
    )
    size: int
    bundle_items: int
    registered_items: int
    nprobe: int | None = Field(None, description="IVF lists scanned per query (ivf only).")
    calibration: IndexCalibrationInfo | None = Field(
        None,
        description="How nprobe was chosen at build time (domains above exact_index_max_items).",
    )


class ModelInfo(BaseModel):
    model_version: str
    bundle_version: str | None = Field(
        default=None, description="Registry version served (None: not serving from a registry)."
    )
    loaded_at: float
    dim: int
    domains: list[str]
    indexes: dict[str, IndexInfo]
    encoders: dict[str, dict[str, Any]]
    query_modalities: list[str] = Field(
        default_factory=list,
        description="What a recommend query may hold (text, image); empty: no queries.",
    )
    registered_items: int


class ReloadRequest(_Strict):
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={"examples": [{"bundle_path": "bundle-2026-02"}, {}]},
    )

    bundle_path: str | None = Field(
        default=None,
        min_length=1,
        max_length=1024,
        description="Bundle directory to load, inside bundles_dir (absolute, or relative to "
        "it); default: the current bundle.",
    )


class ReloadStatus(BaseModel):
    status: Literal["idle", "loading", "succeeded", "failed", "superseded"] = Field(
        description="superseded: built, then dropped because another bundle version was "
        "wanted by then (registry follower); the old model kept serving."
    )
    bundle_path: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    error: str | None = None
    model_version: str | None = Field(default=None, description="Version serving now.")


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class StoreStatus(BaseModel):
    ok: bool
    detail: str | None = None


class BundleStatus(BaseModel):
    """Registry version served and wanted (MICREC_REGISTRY_DIR); ``error`` says why the
    wanted one is not served (the old one keeps serving)."""

    serving: str | None = None
    wanted: str | None = Field(
        default=None, description="The version announced in the store (the last one read)."
    )
    loading: str | None = Field(
        default=None,
        description="The registry version being loaded now (the wanted one, or one that "
        "was wanted when its load began: dropped when it ends).",
    )
    error: str | None = None
    canary: CanaryStatus | None = Field(
        default=None, description="The canary announced in the store (None: no canary)."
    )


class CanaryArm(BaseModel):
    """One arm's online counts (app/feedback, summed over domains) and the rule's metric."""

    version: str | None = Field(description="Registry version.")
    model_version: str | None = Field(description="What answers name (and feedback counts).")
    impressions: int = 0
    clicks: int = 0
    observed: int = 0
    hits: int = 0
    value: float | None = Field(default=None, description="The rule's metric (None: no events).")


class CanaryStatus(BaseModel):
    """The canary every replica serves to a stable share of users (app/lifecycle/canary.py)."""

    version: str = Field(description="The candidate's registry version.")
    share: float = Field(description="Share of users (by hash of their id) it serves.")
    started_at: float
    decided: str | None = Field(description="promote or rollback once decided; None while running.")
    loaded: bool = Field(description="Whether this process has the candidate loaded.")
    verdict: str | None = Field(
        default=None, description="The rule's last reading: wait, promote or rollback (and why)."
    )
    current: CanaryArm | None = None
    candidate: CanaryArm | None = None


class PromoteRequest(_Strict):
    version: str = Field(pattern=r"^v[0-9]{4,12}$", description="Registry version (v0002).")
    reason: str = Field(default="promoted through the admin API", min_length=1, max_length=500)
    force: bool = Field(default=False, description="Promote a refused version anyway.")
    canary: str | None = Field(
        default=None,
        max_length=12,
        description='Serve it first as a canary to this share of users ("10%" or '
        '"0.1"); the rule in settings (or an admin) then promotes or rolls back.',
    )


class CanaryAction(_Strict):
    reason: str = Field(default="decided through the admin API", min_length=1, max_length=500)


class CanaryOut(BaseModel):
    canary: CanaryStatus | None
    outcome: str | None = Field(
        default=None, description="promoted / rolled back (after a decision), else None."
    )


class RollbackRequest(_Strict):
    reason: str = Field(default="rolled back through the admin API", min_length=1, max_length=500)


class PromotionOut(BaseModel):
    version: str = Field(description="The version now current (every replica loads it).")
    previous: str | None
    announced_at: float


class BundleVersionOut(BaseModel):
    version: str
    status: Literal["candidate", "promoted", "refused", "retired"]
    added_at: float
    model_version: str | None
    meta: dict[str, Any]
    refused: dict[str, Any] | None


class BundlesOut(BaseModel):
    current: str | None = Field(description="The registry's promoted version.")
    bundle: BundleStatus = Field(description="What this process serves and wants.")
    versions: list[BundleVersionOut]
    history: list[dict[str, Any]] = Field(description="The newest history events, oldest first.")


class Readiness(BaseModel):
    status: Literal["ready", "degraded", "loading", "failed"]
    model_version: str | None = None
    loaded_at: float | None = None
    domains: list[str] = Field(default_factory=list)
    store: StoreStatus
    degraded: list[str] = Field(
        default_factory=list, description="What is not working while still serving."
    )
    error: str | None = Field(default=None, description="Why the model is not loaded (failed).")
    encoders_unavailable: dict[str, str] = Field(
        default_factory=dict,
        description="Content encoders of the model that cannot be created here, by modality, "
        "with the reason (registrations and queries needing them answer 503).",
    )
    bundle: BundleStatus | None = Field(
        default=None, description="Registry versions (only when serving from a registry)."
    )


class ErrorBody(BaseModel):
    detail: str = Field(examples=["unknown domain 'toys'; valid domains: arts, office"])
