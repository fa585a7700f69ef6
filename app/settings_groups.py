"""The groups of service settings: one class per part of the service, each field the
documentation of its ``MICREC_*`` key. Here the groups of what a worker serves with
(model, index, caches, store, recommend, request limits); app/settings_deploy.py has
those of how it is deployed (auth, server, registry and retraining).

:class:`app.settings.Settings` inherits every group, so a key keeps its flat name (a field
``max_n`` of :class:`LimitsSettings` is ``MICREC_MAX_N`` and ``settings.max_n``) and the
checks across groups, the loading and the refusal of unknown keys stay in one place
(app/settings.py). A new setting goes in the group of the part that reads it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_settings import NoDecode

from app.api.ids import MAX_LIST_ITEMS
from app.api.timestamps import DEFAULT_TIMESTAMP_SKEW_S
from model.serving_cache import CachePolicy, VerifyMode

MB = 1024 * 1024

FallbackName = Literal["popular", "latest"]
"""The fallback strategies ``fallback_chain`` may name (their code: app/serving/fallbacks.py)."""
DEFAULT_CHAIN: tuple[FallbackName, ...] = ("popular", "latest")


def split_list(value: Any) -> Any:
    """Accept ``a,b`` or a JSON list for list-valued keys (env values arrive as strings)."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


class ModelSettings(BaseModel):
    """The model a worker loads and the content encoders of registrations."""

    bundle_path: Path = Field(
        Path("artifacts/demo-bundle"),
        description="Model bundle directory loaded at start-up (manifest.json inside).",
    )
    device: str = Field("cpu", description="torch device for the inference engine.")
    warm_encoders: bool = Field(
        True,
        description="Load the content encoders right after a model load (in the background) "
        "so the first item registration is not slowed by it.",
    )
    encoder_process: bool = Field(
        True,
        description="Encode registration content (MiniLM text, EfficientNet image) in a "
        "separate process, one per machine (micrec serve starts it; an app started "
        "otherwise starts its own on its first registration) and restarted if it dies, so "
        "encodings and recommends do not compete for a worker's interpreter; false = "
        "encode on the worker's registration threads.",
    )
    encoder_threads: int = Field(
        1, ge=1, description="torch threads of the encoder process (its CPU budget)."
    )
    encoder_nice: int = Field(
        -5,
        ge=-20,
        le=19,
        description="Scheduling priority (nice) of the encoder process: below 0 an encoding "
        "takes CPU from busy workers instead of queueing behind them (needs CAP_SYS_NICE, "
        "else logged and left at 0). 2 workers, 1e5, text+image registration p99 under 31 "
        "concurrent recommends: 263 ms at -5, 751-972 ms at 0 (docs/results/serve-steps/"
        "memory.md).",
    )
    encoder_queue: int = Field(
        8,
        ge=1,
        description="Most registrations of one worker waiting for or in the encoder process; "
        "one more gets 503 + Retry-After at once.",
    )
    encoder_timeout_s: float = Field(
        30.0,
        gt=0,
        description="A registration or query whose encoding takes longer gets 503 + "
        "Retry-After (the encoder process being down or restarting is a 503 at once).",
    )
    clip_weights: Path | None = Field(
        None,
        description="Local open_clip weights file of a bundle trained on open_clip features "
        "(text and image share it); its sha256 must be the one the bundle records, else "
        "start-up and reloads are refused. Unset with such a bundle: recommendations serve, "
        "/readyz names the encoder, registrations and queries that need it answer 503.",
    )


class IndexSettings(BaseModel):
    """The per-domain FAISS indexes (app/index/domain.py, app/index/base.py)."""

    exact_index_max_items: int = Field(
        50_000,
        ge=1,
        description="Domains up to this many items use an exact (flat) index, larger ones IVF "
        "(calibrated to ivf_target_recall). At 1e5 items IVF served 166 rps / p99 240 ms "
        "against 136 rps / 347 ms exact (one worker, 32 concurrent) for ~10 s more start-up.",
    )
    ivf_nlist: int | None = Field(
        None, ge=1, description="IVF cells; unset = chosen from the domain size."
    )
    ivf_nprobe: int = Field(
        32,
        ge=1,
        description="IVF cells probed per query (recall/speed); the starting point of the "
        "calibration below.",
    )
    ivf_target_recall: float = Field(
        0.95,
        gt=0,
        le=1,
        description="When an IVF index is built, nprobe is doubled from ivf_nprobe until "
        "recall@100 against exact search reaches this on real users of the bundle "
        "(GET /v1/model shows the outcome).",
    )
    ivf_calibration_queries: int = Field(
        200,
        ge=0,
        description="Bundle users searched to calibrate an IVF index's nprobe; 0 = no "
        "calibration (nprobe = ivf_nprobe).",
    )
    ivf_rerank: int = Field(
        1000,
        ge=1,
        description="Domains of more than 2M items are indexed with 4-bit product-quantised "
        "codes (IVF-PQ fast scan): this many candidates per query are then re-scored exactly "
        "against the serving vectors (recall/speed; nprobe is calibrated at this depth).",
    )
    vector_dtype: Literal["float32", "float16"] = Field(
        "float32",
        description="Storage of the bundle's serving item vectors in the cache and index "
        "(float16: half the memory, scores on rounded vectors; recall and NDCG effect in "
        "docs/results/serve-steps/float16.md). Needs serving_cache for the engine's copy.",
    )


class CacheSettings(BaseModel):
    """The serving cache (arrays derived from a bundle, shared by a machine's workers: model/serving_cache.py) and the top-N cache (app/serving/topn.py)."""

    serving_cache: bool = Field(
        True,
        description="Write the arrays derived from a bundle (serving item vectors, template "
        "rows, each domain's FAISS index) once per machine and memory-map them read-only, so "
        "the workers of a machine share one copy instead of holding one each "
        "(docs/results/serve-steps/mmap.md); false = compute them in each worker's memory.",
    )
    serving_cache_dir: Path | None = Field(
        None,
        description="Where the serving cache is written (one subdirectory per bundle and "
        "settings, keyed by their hash); unset = <registry_dir>/serving-cache with a "
        "registry (one root for every version, so old versions' caches are pruned), else "
        "<bundle>/serving-cache. Must be writable; if it is not, the service computes in "
        "memory and logs a warning.",
    )
    serving_cache_verify: VerifyMode = Field(
        CachePolicy().verify,
        description="How each worker start checks the serving cache: quick = size, mtime, "
        "ctime and inode as recorded at build plus a sha256 of each file's first and last "
        "256 KiB (a file whose stat differs is hashed in full); full = sha256 of every byte. "
        "A cache that fails is rebuilt (model/serving_cache.py says why quick is safe).",
    )
    serving_cache_keep: int = Field(
        CachePolicy().keep,
        ge=0,
        description="Serving cache directories kept at least under one cache root, most "
        "recently used first (a bundle uses one for the engine and one per domain index: "
        "8 = the current and the previous bundle of 3 domains); 0 = never remove any.",
    )
    serving_cache_unused_s: float = Field(
        CachePolicy().unused_s,
        ge=0,
        description="Beyond the kept ones, a serving cache directory is removed once it has "
        "not been opened for this many seconds (and nobody is building it).",
    )
    topn_cache_items: int = Field(
        200,
        ge=0,
        le=10_000,
        description="Items precomputed per known user and domain (top-N cache, "
        "app/serving/topn.py); a request with exclusions or a broad category filter is answered "
        "from it when at least n items remain. 0 = no cache.",
    )
    topn_cache_entries: int = Field(
        10_000,
        ge=0,
        description="Most (user, domain) lists the top-N cache keeps per worker, least "
        "recently used dropped first (~2.5 KB each at 200 items). 0 = no cache.",
    )

    def serving_cache_policy(self) -> CachePolicy:
        """How the serving cache is verified at open and pruned."""
        return CachePolicy(
            self.serving_cache_verify, self.serving_cache_keep, self.serving_cache_unused_s
        )


class StoreSettings(BaseModel):
    """The state store and how replicas follow it."""

    store_url: str = Field(
        "sqlite:///artifacts/state.db",
        description='State store: "sqlite:///path" (one host) or "redis://host:port/db".',
    )
    history_cap: int = Field(200, ge=1, description="Newest interactions kept per user and domain.")
    replica_sync_interval_s: float = Field(
        0.2,  # one cheap store read per tick; keeps cross-replica visibility well under 1 s
        ge=0,
        description="How often the item change feed is polled so registrations/deletions made "
        "by other replicas become visible here; 0 disables following.",
    )
    popularity_refresh_s: float = Field(
        5.0,
        ge=0,
        description="How often API-posted popularity is re-read from the store (other "
        "replicas' interactions); 0 = only this process's own writes.",
    )
    idempotency_ttl_s: int = Field(
        86_400,
        ge=1,
        description="How long the answer to a write sent with an Idempotency-Key is kept: a "
        "retry with that key within this time gets the same answer without applying the "
        "write again.",
    )
    store_retry_after_s: int = Field(
        5, ge=1, description="Retry-After (seconds) sent with 503 when the store is down."
    )
    popularity_key_cap: int = Field(
        50,
        ge=0,
        description="Most users one API key counts in one item's API popularity (the "
        "popular fallback); rows beyond it are stored but not counted, so one key posting "
        "made-up users cannot make an item popular. 0 = no cap (one trusted key). "
        "Figures: docs/results/reliability.md.",
    )
    erasure_purge_interval_s: float = Field(
        60.0,
        ge=0,
        description="Redis: at most one append-only-file rewrite per this many seconds to "
        "purge erased users' data from the AOF (an erased id leaves the files within this "
        "plus the rewrite's own time); SQLite checkpoints at once after each erasure.",
    )


class RecommendSettings(BaseModel):
    """How recommends are computed: the model thread and the fallback chain."""

    fallback_chain: Annotated[list[FallbackName], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_CHAIN),
        description='Filled in order when the model cannot serve a user: "popular" (bundle + '
        'API popularity), "latest" (most recently registered items).',
    )
    model_thread: bool = Field(
        True,
        description="Run recommends' model work (fold-in, search, response) on one "
        "dedicated thread per worker that takes all waiting requests at once; false = "
        "inline on the event loop, which used more CPU per request and lost at c=1 and "
        "c=32 in interleaved runs (docs/results/serve-steps/hotpath.md).",
    )
    model_threads: int = Field(
        1,
        ge=1,
        le=16,
        description="Model threads per worker when model_thread is on, sharing one queue "
        "(each takes one job at a time, so the GIL-free torch/FAISS parts of concurrent "
        "recommends may overlap); 2 did not beat 1 on a 2-core machine "
        "(docs/results/serve-steps/model-threads.md).",
    )
    model_batch_max: int = Field(
        32,
        ge=1,
        le=1024,
        description="Most waiting recommends the model thread computes together (one "
        "batched fold-in and one multi-query index search); 1 = one at a time. Only with one "
        "model thread (docs/results/serve-steps/batch.md).",
    )

    _split_chain = field_validator("fallback_chain", mode="before")(split_list)

    @field_validator("fallback_chain")
    @classmethod
    def _unique_fallbacks(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("fallback_chain names a strategy twice")
        return value


DEFAULT_FEEDBACK_EVENTS = ("impression", "click", "add-to-cart", "purchase")
DEFAULT_POSITIVE_EVENTS = ("click", "add-to-cart", "purchase")
EVENT_NAME = r"^[a-z][a-z0-9_-]{0,31}$"


class FeedbackSettings(BaseModel):
    """What is recorded of served recommendations and the feedback on them (app/feedback/)."""

    record_recommendations: bool = Field(
        True,
        description="Give every recommend answer a recommendation_id and record the served "
        "list in the store (written off the request path, in batches), so POST /v1/feedback "
        "can attribute events to it and the online metrics per bundle version can be "
        "counted; false = no id, no record, no feedback.",
    )
    recommendation_ttl_s: float = Field(
        86_400.0,
        gt=0,
        description="How long a served list is kept for feedback; feedback on an older one "
        "gets 404.",
    )
    recommendation_max_records: int = Field(
        1_000_000,
        ge=1,
        description="Most served lists kept in the store (the oldest go first); bytes per "
        "record and the cost at 1e3 rps: docs/results/online-recording.md.",
    )
    record_queue: int = Field(
        10_000,
        ge=1,
        description="Served lists one worker holds waiting to be written; beyond it a "
        "record is dropped (micrec_recommendation_records_dropped_total) rather than slow "
        "the recommend, and feedback on it gets 404.",
    )
    record_flush_s: float = Field(
        0.2,
        gt=0,
        le=60,
        description="How often a worker writes its waiting records (one store write each time).",
    )
    feedback_events: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_FEEDBACK_EVENTS),
        description="Event types POST /v1/feedback accepts (lowercase names); "
        '"impression" counts as seen.',
    )
    feedback_positive: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_POSITIVE_EVENTS),
        description="Which of feedback_events are positive: they count as clicks in the "
        "online metrics and a named user's become interactions (their history) too.",
    )

    _split_events = field_validator("feedback_events", "feedback_positive", mode="before")(
        split_list
    )

    @field_validator("feedback_events", "feedback_positive")
    @classmethod
    def _event_names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not isinstance(name, str) or re.fullmatch(EVENT_NAME, name) is None:
                raise ValueError(
                    "event types are 1-32 characters: a lowercase letter, then lowercase "
                    "letters, digits, _ or -"
                )
        if len(set(value)) != len(value):
            raise ValueError("an event type is named twice")
        return value

    @model_validator(mode="after")
    def _positive_are_events(self) -> FeedbackSettings:
        unknown = sorted(set(self.feedback_positive) - set(self.feedback_events))
        if unknown:
            raise ValueError(f"feedback_positive names types not in feedback_events: {unknown}")
        return self


class LimitsSettings(BaseModel):
    """Bounds on requests: sizes, counts, timestamps (a request beyond one gets a 4xx naming the setting)."""

    default_n: int = Field(10, ge=1, description="Items returned when a request omits n.")
    max_n: int = Field(500, ge=1, description="Largest n a request may ask for.")
    max_batch: int = Field(
        1000, ge=1, le=MAX_LIST_ITEMS, description="Most rows in one POST /v1/interactions."
    )
    max_history: int = Field(
        1000,
        ge=1,
        le=MAX_LIST_ITEMS,
        description="Most item ids in an inline history or an exclude list.",
    )
    max_body_bytes: int = Field(
        10 * MB, ge=1024, description="Largest request body of item and interaction writes (413)."
    )
    max_recommend_body_bytes: int = Field(
        256 * 1024,
        ge=1024,
        description="Largest body of every other request (POST /v1/recommend, admin): "
        "max_history ids twice over fit; a read never needs the registration limit (413).",
    )
    max_image_bytes: int = Field(5 * MB, ge=1, description="Largest image file (413).")
    max_image_pixels: int = Field(
        12_000_000,
        ge=1,
        description="Largest image width*height; checked from the header before decoding "
        "(decompression bombs). JPEGs decode at reduced size, other formats in full.",
    )
    max_image_aspect_ratio: float = Field(
        10.0,
        ge=1,
        description="Largest long side / short side of an image: encoders scale the short "
        "side up to their input size, so a 100000x20 strip would cost gigabytes (422).",
    )
    max_text_chars: int = Field(
        10_000, ge=1, description="Longest title + categories + description of an item."
    )
    max_timestamp_skew_s: float = Field(
        DEFAULT_TIMESTAMP_SKEW_S,
        ge=0,
        description="How far past the server's clock an interaction's timestamp may be "
        "(422); exports and retraining drop stored rows beyond it (counted), so far-future "
        "stamps cannot fill the evaluation window.",
    )
