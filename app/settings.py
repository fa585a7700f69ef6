"""Service configuration: every ``MICREC_*`` key, its default and its bounds, in one place.

Values come from the environment (prefix ``MICREC_``) or an env file
(``micrec serve --env-file``; see ``configs/service.example.env``, which documents every
key). They are validated when the service starts, so a typo or an out-of-range value stops
start-up with one line naming the key instead of surfacing on the first request.

Unknown keys are rejected: pydantic-settings already refuses unknown keys in an env file
(``extra="forbid"``); unknown ``MICREC_*`` *environment variables* are checked by
:func:`load_settings`, because pydantic-settings silently ignores those.

List values (``MICREC_API_KEYS``, ``MICREC_FALLBACK_CHAIN``, ``MICREC_CORS_ORIGINS``) are
comma-separated (``MICREC_API_KEYS=k1,k2``) or a JSON list.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from app.ids import MAX_LIST_ITEMS
from app.timestamps import DEFAULT_TIMESTAMP_SKEW_S
from model.runconfig import ConfigError
from model.serving_cache import CachePolicy, VerifyMode

ENV_PREFIX = "MICREC_"


LIBRARY_ENV_KEYS = frozenset(
    {
        "MICREC_THREADS",
        "MICREC_ENV_FILE",
        "MICREC_DIST_BACKEND",
        "MICREC_ENCODER_ADDRESS",
        "MICREC_ENCODER_KEY",
    }
)
"""``MICREC_*`` variables read by the library/CLI rather than by the service settings
(the encoder ones are set by ``micrec serve`` for its workers, app/encoding.py)."""

MB = 1024 * 1024

FallbackName = Literal["popular", "latest"]
"""The fallback strategies ``fallback_chain`` may name (their code: app/fallbacks.py)."""
DEFAULT_CHAIN: tuple[FallbackName, ...] = ("popular", "latest")


def _split_list(value: Any) -> Any:
    """Accept ``a,b`` or a JSON list for list-valued keys (env values arrive as strings)."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    """All service settings. Field descriptions are the documentation of each key."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="forbid",
        env_file=None,
        frozen=True,
        validate_default=True,
    )

    # --- model -----------------------------------------------------------------------
    bundle_path: Path = Field(
        Path("artifacts/demo-bundle"),
        description="Model bundle directory loaded at start-up (manifest.json inside).",
    )
    registry_dir: Path | None = Field(
        None,
        description="Serve from this bundle registry (micrec bundles) instead of bundle_path: "
        "the version announced in the store by promote/rollback, else the registry's "
        "current one; every replica reloads when a new version is announced.",
    )
    registry_poll_s: float = Field(
        0.5,
        gt=0,
        description="How often the store is asked which registry version to serve "
        "(one small read; only with registry_dir).",
    )
    device: str = Field("cpu", description="torch device for the inference engine.")
    warm_encoders: bool = Field(
        True,
        description="Load the content encoders right after a model load (in the background) "
        "so the first item registration is not slowed by it.",
    )
    torch_threads: int | None = Field(
        None, ge=1, description="torch intra-op threads; unset = number of cores."
    )
    faiss_threads: int | None = Field(
        None, ge=1, description="FAISS OpenMP threads; unset = number of cores."
    )
    request_threads: int = Field(
        4,
        ge=1,
        description="Threads per worker that run blocking request work (embedding, FAISS, "
        "store, encoders). More threads than cores only contend for the GIL: at 1e5 items, "
        "one worker, 32 concurrent requests, 4 threads gave 157 rps / p99 276 ms against "
        "113 rps / 836 ms with anyio's default of 40 (bench/serve.py).",
    )

    gil_switch_interval_ms: float = Field(
        1.0,
        gt=0,
        le=100,
        description="Python's thread switch interval (sys.setswitchinterval; Python's "
        "default is 5 ms). Every torch/FAISS call releases the GIL and must win it back "
        "from busy Python threads: a text+image encoding next to one busy thread took 1.3 s "
        "at 5 ms, 0.37 s at 1 ms, 0.07 s alone; in the full service the difference was "
        "within run-to-run noise (docs/results/serve-steps).",
    )
    gc_gen0_threshold: int = Field(
        50_000,
        ge=700,
        le=10_000_000,
        description="Allocations between the cyclic garbage collector's young-generation "
        "runs (gc.set_threshold; Python's default is 700). Each run scans every object of the "
        "requests in flight; at 700 that was 7 % of a busy worker's event loop "
        "(docs/results/serve-steps/batch.md). Objects are still freed by reference counting "
        "at once; only garbage in reference cycles waits longer.",
    )
    registration_threads: int = Field(
        2,
        ge=1,
        description="Threads per worker for item registration and replacement (content "
        "encoding), counted apart from request_threads so a registration never queues "
        "behind recommendations.",
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
        description="A registration whose encoding takes longer gets 503 + Retry-After (the "
        "encoder process being down or restarting is a 503 at once).",
    )

    # --- index -----------------------------------------------------------------------
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
    vector_dtype: Literal["float32", "float16"] = Field(
        "float32",
        description="Storage of the bundle's serving item vectors in the cache and index "
        "(float16: half the memory, scores on rounded vectors; recall and NDCG effect in "
        "docs/results/serve-steps/float16.md). Needs serving_cache for the engine's copy.",
    )

    # --- state store -----------------------------------------------------------------
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

    # --- security --------------------------------------------------------------------
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="Accepted X-API-Key values (comma-separated). Empty = authentication "
        "disabled (local development only; logged as a warning at start-up).",
    )
    require_key_for_reads: bool = Field(
        False,
        description="Also require X-API-Key for reads that name no user (inline-history and "
        "anonymous recommendations, items, similar, model info); probes stay open.",
    )
    open_user_reads: bool = Field(
        False,
        description="Serve reads that name a user (GET /v1/users/{id}/recommendations, "
        "POST /v1/recommend with user_id) without X-API-Key. Only for deployments whose own "
        "gateway authenticates callers: a user's recommendations reveal their history.",
    )
    admin_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="X-API-Key values for /v1/admin/* (comma-separated), distinct from "
        "api_keys. Empty while api_keys is set = admin endpoints disabled (403).",
    )
    bundles_dir: Path | None = Field(
        None,
        description="The only directory admin reloads may load bundles from (its "
        "subdirectories); unset = the directory that contains bundle_path.",
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Origins allowed by CORS (comma-separated); empty = off."
    )

    # --- web console -----------------------------------------------------------------
    console: bool = Field(
        True,
        description="Serve the web console under /ui/ (static pages that call this API "
        "with the key typed into the browser; they add no access of their own).",
    )
    item_images_dir: Path | None = Field(
        None,
        description="Directory of bundle item pictures named <item_id>.png (.jpg, .jpeg, "
        ".webp, .gif), e.g. the demo catalogue's images/; served by GET "
        "/v1/items/{id}/image. Unset = bundle items have no picture.",
    )

    # --- request limits --------------------------------------------------------------
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

    # --- behaviour -------------------------------------------------------------------
    fallback_chain: Annotated[list[FallbackName], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_CHAIN),
        description='Filled in order when the model cannot serve a user: "popular" (bundle + '
        'API popularity), "latest" (most recently registered items).',
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Log level of the service loggers."
    )

    # --- serve (micrec serve) --------------------------------------------------------
    host: str = Field("127.0.0.1", description="Bind address for micrec serve.")
    port: int = Field(8000, ge=0, le=65535, description="Port for micrec serve.")
    workers: int = Field(1, ge=1, description="uvicorn worker processes for micrec serve.")
    keep_alive_timeout_s: int = Field(
        5, ge=1, description="Idle keep-alive connections are closed after this (uvicorn)."
    )
    header_timeout_s: float = Field(
        10.0,
        gt=0,
        description="A request's headers must arrive within this many seconds of its first "
        "byte, or the connection is closed (slow-header clients).",
    )
    body_timeout_s: float = Field(
        30.0,
        gt=0,
        description="A request body must arrive within this many seconds of the headers "
        "(408 otherwise; slow-body clients).",
    )
    max_concurrency: int = Field(
        256,
        ge=1,
        description="Open connections + tasks per worker beyond which uvicorn answers 503 "
        "(uvicorn limit_concurrency).",
    )
    max_header_bytes: int = Field(
        16 * 1024,
        ge=1024,
        description="Largest request line + headers per request (h11 "
        "max_incomplete_event_size; the httptools parser has its own fixed cap).",
    )

    # --- continuous learning (micrec retrain / micrec trainer, app/retrain.py) --------
    retrain_dir: Path = Field(
        Path("artifacts/retrain"),
        description="Where micrec retrain keeps each run (export, training data, candidate, "
        "outcome); a promoted candidate's run is the next export's base: keep it.",
    )
    retrain_window_fraction: float = Field(
        0.1,
        gt=0,
        lt=1,
        description="Evaluation window: the newest share of interactions held out of "
        "training and scored for both models (unless retrain_window_days is set).",
    )
    retrain_window_days: float | None = Field(
        None, gt=0, description="Evaluation window: the last N days before the newest row."
    )
    retrain_metric: str = Field(
        "ndcg@20",
        pattern=r"^(ndcg|recall)@(10|20|50)$",
        description="The gate's metric: candidate >= current - retrain_tolerance or refused.",
    )
    retrain_slice: str = Field("all", description="The gate's evaluation slice (all domains).")
    retrain_tolerance: float = Field(
        0.0,
        ge=0,
        le=1,
        description="How much worse (absolute, e.g. 0.005 = half an NDCG point) a candidate "
        "may measure and still be promoted; 0 = never promote one that measured worse.",
    )
    retrain_tune: bool = Field(
        False,
        description="Re-run the [tune] search when retraining (slow); default trains the "
        "current bundle's chosen configuration once.",
    )
    retrain_keep_runs: int = Field(
        0,
        ge=0,
        description="Keep only the newest N retrain runs in retrain_dir (0 = keep all); a "
        "run whose training data a registry version was trained on is always kept.",
    )
    trainer_interval_s: float = Field(
        0,
        ge=0,
        description="micrec trainer: retrain every this many seconds; 0 = not on a schedule.",
    )
    trainer_min_new_interactions: int = Field(
        0,
        ge=0,
        description="micrec trainer: retrain once this many interactions arrived since the "
        "last run; 0 = not on volume. Both 0 (the default): the trainer never retrains.",
    )
    trainer_check_s: float = Field(
        30.0, gt=0, description="micrec trainer: how often the interaction count is read."
    )
    trainer_metrics_host: str = Field(
        "127.0.0.1", description="micrec trainer: bind address of its Prometheus metrics."
    )
    trainer_metrics_port: int = Field(
        9101, ge=0, le=65535, description="micrec trainer: port of its Prometheus /metrics."
    )
    # --- recommend hot path (app/recommend.py, app/topn.py) ------------------------------
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
    topn_cache_items: int = Field(
        200,
        ge=0,
        le=10_000,
        description="Items precomputed per known user and domain (top-N cache, "
        "app/topn.py); a request with exclusions or a broad category filter is answered "
        "from it when at least n items remain. 0 = no cache.",
    )
    topn_cache_entries: int = Field(
        10_000,
        ge=0,
        description="Most (user, domain) lists the top-N cache keeps per worker, least "
        "recently used dropped first (~2.5 KB each at 200 items). 0 = no cache.",
    )

    _split = field_validator(
        "api_keys", "admin_keys", "cors_origins", "fallback_chain", mode="before"
    )(_split_list)

    @field_validator("fallback_chain")
    @classmethod
    def _unique_fallbacks(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("fallback_chain names a strategy twice")
        return value

    @field_validator("api_keys", "admin_keys")
    @classmethod
    def _no_blank_keys(cls, value: list[SecretStr]) -> list[SecretStr]:
        # A short key is brute-forceable; refuse it rather than run half-protected.
        for key in value:
            if len(key.get_secret_value()) < 8:
                raise ValueError("every API key must have at least 8 characters")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.default_n > self.max_n:
            raise ValueError(f"default_n ({self.default_n}) is larger than max_n ({self.max_n})")
        admin = {k.get_secret_value() for k in self.admin_keys}
        if admin & {k.get_secret_value() for k in self.api_keys}:
            raise ValueError("admin_keys must differ from api_keys")
        return self

    @property
    def auth_enabled(self) -> bool:
        return bool(self.api_keys)

    def serving_cache_root(self, bundle_path: Path) -> Path | None:
        """The serving cache directory for ``bundle_path`` (None: caching off). With a
        registry, one root for all its versions (not inside each version's bundle), so
        pruning removes the caches of versions no longer served."""
        if not self.serving_cache:
            return None
        if self.serving_cache_dir is not None:
            return self.serving_cache_dir
        if self.registry_dir is not None:
            return self.registry_dir / "serving-cache"
        return Path(bundle_path) / "serving-cache"

    def serving_cache_policy(self) -> CachePolicy:
        """How the serving cache is verified at open and pruned."""
        return CachePolicy(
            self.serving_cache_verify, self.serving_cache_keep, self.serving_cache_unused_s
        )

    @property
    def bundles_root(self) -> Path:
        """Where admin reloads may load from (bundles_dir, else bundle_path's parent)."""
        return self.bundles_dir if self.bundles_dir is not None else self.bundle_path.parent


class SettingsError(ConfigError):
    """Invalid configuration; ``str(err)`` names every offending key on one line (the CLI
    prints it as a config error, like a bad run config)."""


def _format_validation_error(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        if not e["loc"]:  # a check across keys (default_n vs max_n): its message names them
            parts.append(msg)
            continue
        parts.append(f"{ENV_PREFIX}{str(e['loc'][0]).upper()}: {msg}")
    return "invalid settings: " + "; ".join(parts)


def unknown_env_keys(environ: dict[str, str] | None = None) -> list[str]:
    """``MICREC_*`` environment variables that name no setting (typos)."""
    env = os.environ if environ is None else environ
    known = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    return sorted(k for k in env if k.startswith(ENV_PREFIX) and k not in known | LIBRARY_ENV_KEYS)


def load_settings(env_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Settings from the environment (+ optional env file) with ``overrides`` on top.

    Raises :class:`SettingsError` (one line) for unknown keys or invalid values.
    """
    unknown = unknown_env_keys()
    if unknown:
        raise SettingsError(f"invalid settings: unknown environment keys {', '.join(unknown)}")
    if env_file is not None and not Path(env_file).is_file():
        raise SettingsError(f"env file not found: {env_file}")
    try:
        return Settings(_env_file=env_file, **overrides)  # type: ignore[call-arg]
    except ValidationError as err:
        raise SettingsError(_format_validation_error(err)) from None
