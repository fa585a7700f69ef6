"""The groups of service settings about deployment: who may call (auth), the process
(micrec serve, threads, logging, console) and where bundles come from (registry,
retraining). The serving groups and how groups make one ``Settings``:
app/settings_groups.py."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import NoDecode

from app.settings_groups import split_list


class AuthSettings(BaseModel):
    """Who may call what (app/http/security.py)."""

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

    _split_keys = field_validator("api_keys", "admin_keys", "cors_origins", mode="before")(
        split_list
    )

    @field_validator("api_keys", "admin_keys")
    @classmethod
    def _no_blank_keys(cls, value: list[SecretStr]) -> list[SecretStr]:
        # A short key is brute-forceable; refuse it rather than run half-protected.
        for key in value:
            if len(key.get_secret_value()) < 8:
                raise ValueError("every API key must have at least 8 characters")
        return value

    @property
    def auth_enabled(self) -> bool:
        return bool(self.api_keys)


class ServerSettings(BaseModel):
    """The process: micrec serve's uvicorn, threads, the interpreter, logging, the web console."""

    host: str = Field("127.0.0.1", description="Bind address for micrec serve.")
    port: int = Field(8000, ge=0, le=65535, description="Port for micrec serve.")
    workers: int = Field(1, ge=1, description="uvicorn worker processes for micrec serve.")
    keep_alive_timeout_s: int = Field(
        5, ge=1, description="Idle keep-alive connections are closed after this (uvicorn)."
    )
    header_timeout_s: float = Field(
        10.0,
        gt=0,
        description="A request's headers must be complete within this many seconds, or the "
        "connection is closed (silent and slow-header clients): from the connection's start "
        "for its first request, from the first byte for later ones.",
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
        description="Requests in flight per worker beyond which a new request gets 503 + "
        "Retry-After at once. Open connections without a request in progress do not count "
        "(uvicorn's limit_concurrency counted them: 300 idle connections made every request "
        "503, docs/results/reliability.md).",
    )
    max_connections: int = Field(
        2048,
        ge=1,
        description="Open connections per worker; a new connection beyond it is answered 503 "
        "and closed before anything is read. micrec serve raises the soft open-file limit to "
        "fit when the hard limit allows.",
    )
    max_pending_per_client: int = Field(
        128,
        ge=0,
        description="Connections from one client address that have not completed their first "
        "request's headers (new, silent or trickling); a new one beyond it is answered 429 "
        "and closed before anything is read. 0 = no cap: set 0 behind a reverse proxy, where "
        "every client has the proxy's address and the proxy limits clients "
        "(docs/service.md).",
    )
    max_header_bytes: int = Field(
        16 * 1024,
        ge=1024,
        description="Largest request line + headers per request (h11 "
        "max_incomplete_event_size; the httptools parser has its own fixed cap).",
    )
    request_threads: int = Field(
        4,
        ge=1,
        description="Threads per worker that run blocking request work (embedding, FAISS, "
        "store, encoders). More threads than cores only contend for the GIL: at 1e5 items, "
        "one worker, 32 concurrent requests, 4 threads gave 157 rps / p99 276 ms against "
        "113 rps / 836 ms with anyio's default of 40 (bench/serve.py).",
    )
    registration_threads: int = Field(
        2,
        ge=1,
        description="Threads per worker for item registration and replacement (content "
        "encoding), counted apart from request_threads so a registration never queues "
        "behind recommendations.",
    )
    torch_threads: int | None = Field(
        None, ge=1, description="torch intra-op threads; unset = number of cores."
    )
    faiss_threads: int | None = Field(
        None, ge=1, description="FAISS OpenMP threads; unset = number of cores."
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
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Log level of the service loggers."
    )
    api_docs: bool = Field(
        False,
        description="Serve the interactive API pages /docs (Swagger UI) and /redoc. Their "
        "scripts come from a CDN (cdn.jsdelivr.net), so they are off unless asked for "
        "(make run turns them on for local use); /openapi.json is always served.",
    )
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


class RegistrySettings(BaseModel):
    """Serving from a bundle registry, and continuous learning (micrec retrain / micrec trainer, app/learning/retrain_run.py)."""

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
        "may plausibly be and still be promoted: the low end of the bootstrap interval of the "
        "mean per-user difference (candidate - current) must be above -tolerance; 0 = only "
        "a candidate better with retrain_confidence.",
    )
    retrain_margin: float = Field(
        0.0,
        ge=-1,
        le=1,
        description="The mean per-user difference (candidate - current, paired over the "
        "window's users) must be above this; 0 = strictly better on average, so a tie keeps "
        "the current version. Negative: accept a candidate that measured up to that much worse.",
    )
    retrain_min_users: int = Field(
        30,
        ge=1,
        description="Fewer users scored on the window than this: the candidate is refused "
        "(too little evidence; the next run's window holds more).",
    )
    retrain_confidence: float = Field(
        0.95,
        ge=0.5,
        lt=1,
        description="Level of the gate's bootstrap interval of the mean per-user difference "
        "(2000 resamples of the users, seeded: a run is reproducible).",
    )
    retrain_min_user_rows: int = Field(
        2,
        ge=2,
        description="A user who appears only in the window is scored from their own earlier "
        "rows (the earlier half of their items as input, the rest as targets) when they have "
        "at least this many distinct items there; fewer: left out (counted in the report).",
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
    canary_min_events: int = Field(
        1000,
        ge=1,
        description="Canary rule: events each arm (current and candidate) needs before it "
        "decides: impressions for canary_metric=ctr, observed recommendations (with any "
        "feedback) for hit_rate and mrr.",
    )
    canary_metric: Literal["ctr", "hit_rate", "mrr"] = Field(
        "ctr",
        description="Canary rule: the online metric compared (app/feedback, summed over domains).",
    )
    canary_tolerance: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Canary rule: promote when candidate >= current - tolerance (absolute) once "
        "both arms have canary_min_events; else roll back.",
    )
    canary_check_s: float = Field(
        5.0,
        gt=0,
        description="How often a replica reads the canary's online metrics and applies the "
        "rule (the first replica to record a decision in the store acts on it).",
    )
    canary_auto: bool = Field(
        True,
        description="Apply the canary rule automatically; false: only micrec bundles canary "
        "promote|abort (or the admin API) decide.",
    )
    trainer_canary_share: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="micrec retrain / trainer: a candidate the gate passes starts as a canary "
        "for this share of users instead of being promoted at once; 0 = promote directly.",
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
