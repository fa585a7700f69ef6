"""The FastAPI application: ``create_app()`` factory, lifespan, middleware, error mapping.

``uvicorn app.http.main:create_app --factory`` (or ``micrec serve``) builds the app from
``MICREC_*`` settings. Start-up validates the settings, opens the store and starts
loading the model in a background thread, so ``/healthz`` answers at once and
``/readyz`` turns 200 when the model serves.
"""

from __future__ import annotations

import gc
import logging
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import anyio
import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api import validation
from app.api.errors import ServiceError
from app.catalogue.encoding import encoder_client
from app.http.connections import InFlightLimitMiddleware
from app.http.routers import (
    bundles,
    feedback,
    health,
    interactions,
    items,
    model,
    recommend,
    reload,
    users,
)
from app.index.milvus_conn import IndexUnavailable
from app.lifecycle.engine import EngineFactory, load_engine
from app.runtime.idempotency import HEADER as IDEMPOTENCY_HEADER
from app.runtime.idempotency import REPLAYED_HEADER
from app.runtime.telemetry import Metrics, MetricsMiddleware
from app.service import RecommendationService
from app.settings import Settings, load_settings
from app.store.base import Store
from model import serving_cache

log = logging.getLogger("micrec.app")

API_DESCRIPTION = """\
Inductive, cross-domain, multimodal recommendations.

* Writes need an `X-API-Key` header (reads too when `MICREC_REQUIRE_KEY_FOR_READS`).
* Every error is JSON `{"detail": "..."}` saying what is wrong.
* Every recommended item says where it came from (`source`: model, popular, latest).
"""


class BodyTooLarge(StarletteHTTPException):
    """Raised from ``receive`` when a body outgrows the limit.

    An ``HTTPException`` so FastAPI's body parsing passes it through unchanged (it turns
    other exceptions raised while reading the body into a generic 400).
    """

    def __init__(self, limit: int, setting: str = "max_body_bytes") -> None:
        super().__init__(413, f"request body is larger than {setting}={limit} bytes")


class BodyTimeout(StarletteHTTPException):
    """Raised from ``receive`` when the body does not arrive within ``body_timeout_s``."""

    def __init__(self, seconds: float) -> None:
        super().__init__(408, f"request body not received within body_timeout_s={seconds:g} s")


WRITE_PATHS = ("/v1/items", "/v1/interactions")
"""Paths whose bodies may reach max_body_bytes (images, batches); every other request is
held to max_recommend_body_bytes."""


class BodySizeLimitMiddleware:
    """413 for bodies over their limit: by Content-Length before reading anything, and by
    counting streamed bytes for chunked uploads that declare no length; 408 for bodies
    that do not arrive within ``timeout_s`` (slow-body clients)."""

    def __init__(
        self, app: ASGIApp, max_bytes: int, read_max_bytes: int | None = None, timeout_s: float = 30
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.read_max_bytes = max_bytes if read_max_bytes is None else read_max_bytes
        self.timeout_s = timeout_s

    def _limit(self, path: str) -> tuple[int, BodyTooLarge]:
        if path.startswith(WRITE_PATHS) or self.read_max_bytes >= self.max_bytes:
            return self.max_bytes, BodyTooLarge(self.max_bytes)
        return self.read_max_bytes, BodyTooLarge(self.read_max_bytes, "max_recommend_body_bytes")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, too_large = self._limit(scope.get("path", ""))
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared > limit:
                    await _send_json(send, 413, too_large.detail)
                    return
        received = 0
        started = False
        body_done = False
        deadline = anyio.current_time() + self.timeout_s

        async def limited_receive() -> Message:
            nonlocal received, body_done
            if body_done:  # after the body: waiting for a disconnect, no deadline
                return await receive()
            with anyio.move_on_after(max(0.0, deadline - anyio.current_time())) as scope_:
                message = await receive()
            if scope_.cancelled_caught:
                raise BodyTimeout(self.timeout_s)
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise too_large
                body_done = not message.get("more_body", False)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except (BodyTooLarge, BodyTimeout) as err:
            # Reached only when no handler turned it into a response already.
            if started:
                raise
            await _send_json(send, err.status_code, err.detail)


async def _send_json(send: Send, status: int, detail: str) -> None:
    response = JSONResponse({"detail": detail}, status_code=status)
    await send({"type": "http.response.start", "status": status, "headers": response.raw_headers})
    await send({"type": "http.response.body", "body": response.body})


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def service_error(request: Request, err: ServiceError) -> JSONResponse:
        return JSONResponse({"detail": err.detail}, err.status_code, headers=err.headers)

    @app.exception_handler(IndexUnavailable)
    async def index_unavailable(request: Request, err: IndexUnavailable) -> JSONResponse:
        # Milvus (index_backend=milvus) did not answer: the message names it; the
        # connection fails fast for milvus_retry_s (1 s default) before trying again.
        return JSONResponse({"detail": str(err)}, 503, headers={"Retry-After": "1"})

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, err: RequestValidationError) -> JSONResponse:
        # One readable message plus a short structured list for programs (bounded size).
        return JSONResponse(validation.summarise(err.errors()), 422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(
            {"detail": str(err.detail)}, err.status_code, headers=getattr(err, "headers", None)
        )

    @app.exception_handler(Exception)
    async def unexpected(request: Request, err: Exception) -> JSONResponse:
        # Only genuine bugs get here: every expected failure is a ServiceError.
        log.exception("unhandled error in %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "internal server error"}, 500)


def _configure_runtime(settings: Settings) -> None:
    """Thread counts and image limits: process-wide, so set once at start-up."""
    from PIL import Image

    # PIL raises DecompressionBombError above 2x this; our own header check (app.catalogue.content)
    # rejects anything above 1x before decoding.
    Image.MAX_IMAGE_PIXELS = settings.max_image_pixels
    sys.setswitchinterval(settings.gil_switch_interval_ms / 1000)
    gc.set_threshold(settings.gc_gen0_threshold, *gc.get_threshold()[1:])
    if settings.torch_threads:
        import torch

        torch.set_num_threads(settings.torch_threads)
    if settings.faiss_threads:
        import faiss

        faiss.omp_set_num_threads(settings.faiss_threads)
    logging.getLogger("micrec").setLevel(settings.log_level.upper())
    serving_cache.configure(settings.serving_cache_policy())


def create_app(
    settings: Settings | None = None,
    *,
    engine_factory: EngineFactory | None = None,
    store: Store | None = None,
) -> FastAPI:
    """Build the app. Without arguments (uvicorn ``--factory``) everything comes from the
    environment; tests pass settings, a test engine factory and/or a store."""
    if settings is None:
        settings = load_settings(env_file=os.environ.get("MICREC_ENV_FILE"))
    # registration encoding in a separate process (only for the production engine)
    encoders = encoder_client(settings) if engine_factory is None else None
    factory: EngineFactory = engine_factory or partial(
        load_engine,
        device=settings.device,
        cache_root=settings.serving_cache_root,
        vector_dtype=settings.vector_dtype,
        encoder_provider=None if encoders is None else encoders.encoder,
        clip_weights=settings.clip_weights,
    )
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        _configure_runtime(settings)
        # sync handlers and dependencies run on anyio's worker threads; the limiter is
        # per event loop, so it is set here, inside the loop
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.request_threads
        app.state.registration_limiter = anyio.CapacityLimiter(settings.registration_threads)
        if not settings.auth_enabled:
            log.warning(
                "AUTHENTICATION DISABLED: MICREC_API_KEYS is empty, anyone can write. "
                "Set MICREC_API_KEYS for any deployment beyond local development."
            )
        own_store = store is None
        if store is None:
            from app.store.factory import create_store

            the_store = create_store(settings.store_url)
        else:
            the_store = store
        service = RecommendationService(settings, the_store, factory, metrics)
        app.state.service = service
        service.start()
        try:
            yield
        finally:
            service.stop()
            if encoders is not None:
                encoders.close()
            if own_store:
                the_store.close()

    app = FastAPI(
        title="MICRec",
        version="1",
        description=API_DESCRIPTION,
        lifespan=lifespan,
        # /docs and /redoc only with api_docs (app/http/api_docs.py: CDN scripts, CSP)
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    for router in (
        recommend.router,
        items.router,
        interactions.router,
        feedback.router,
        users.router,
        model.router,
        reload.router,
        bundles.router,
        health.router,
    ):
        app.include_router(router)
    _install_error_handlers(app)
    if settings.api_docs:
        from app.http.api_docs import install as install_api_docs

        install_api_docs(app)
    if settings.console:
        from app.http.ui.router import install as install_console

        install_console(app)

    # Added last = outermost: metrics see every response, including 413s and CORS.
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "PUT", "DELETE"],
            allow_headers=["Content-Type", "X-API-Key", IDEMPOTENCY_HEADER],
            expose_headers=[REPLAYED_HEADER, "Retry-After"],
        )
    app.add_middleware(
        BodySizeLimitMiddleware,
        max_bytes=settings.max_body_bytes,
        read_max_bytes=settings.max_recommend_body_bytes,
        timeout_s=settings.body_timeout_s,
    )
    # requests in flight, not open sockets: idle connections cost no slot (app/http/connections.py)
    app.add_middleware(InFlightLimitMiddleware, max_in_flight=settings.max_concurrency)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app
