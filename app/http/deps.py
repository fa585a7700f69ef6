"""Typed FastAPI dependencies shared by the routers.

Handlers declare the part of the service they call (``recommender: RecommenderDep``,
``items: ItemsDep``, ...; ``service: ServiceDep`` for what the service composes from
several parts) and never reach into ``request.app.state`` themselves, so "go to
definition" leads from a handler's call straight to the method that does the work.
"""

from __future__ import annotations

from typing import Annotated

from anyio import CapacityLimiter
from fastapi import Depends, Header, Request

from app.catalogue.browse import Browser
from app.catalogue.items import Items
from app.feedback.events import Feedback
from app.http.security import (
    API_KEY_HEADER,
    require_admin_key,
    require_read_key,
    require_user_read_key,
    require_write_key,
    require_write_or_admin_key,
)
from app.lifecycle.canary_follow import CanaryAdmin
from app.lifecycle.promotion import RegistryAdmin
from app.lifecycle.reload import ModelLoader
from app.runtime.idempotency import HEADER, MAX_KEY_CHARS, IdempotencyGuard, KeyedRequest
from app.runtime.telemetry import Metrics
from app.service import RecommendationService
from app.serving.recommend import Recommender
from app.settings import Settings
from app.users.erasure import UserErasure
from app.users.interactions import Interactions


# ``async def``: FastAPI would run a plain ``def`` dependency in the thread pool (one hop
# per dependency per request; they only read app.state).
async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_service(request: Request) -> RecommendationService:
    service: RecommendationService = request.app.state.service
    return service


async def get_recommender(request: Request) -> Recommender:
    return (await get_service(request)).recommender


async def get_items(request: Request) -> Items:
    return (await get_service(request)).items


async def get_interactions(request: Request) -> Interactions:
    return (await get_service(request)).interactions


async def get_erasure(request: Request) -> UserErasure:
    return (await get_service(request)).erasure


async def get_feedback(request: Request) -> Feedback:
    return (await get_service(request)).feedback


async def get_browser(request: Request) -> Browser:
    return (await get_service(request)).browser


async def get_idempotency(request: Request) -> IdempotencyGuard:
    return (await get_service(request)).idempotency


async def get_loader(request: Request) -> ModelLoader:
    return (await get_service(request)).loader


async def get_registry_admin(request: Request) -> RegistryAdmin | None:
    return (await get_service(request)).registry_admin


async def get_canary_admin(request: Request) -> CanaryAdmin | None:
    return (await get_service(request)).canary_admin


async def get_metrics(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


async def get_registration_limiter(request: Request) -> CapacityLimiter:
    limiter: CapacityLimiter = request.app.state.registration_limiter
    return limiter


async def get_keyed_request(
    request: Request,
    key: Annotated[
        str | None,
        Header(
            alias=HEADER,
            description=f"Makes the write safe to retry: 1-{MAX_KEY_CHARS} printable ASCII "
            "characters, new for each distinct request. A retry with the same key and body "
            "gets the first answer (header Idempotent-Replayed: true) without applying it "
            "again; the same key with another body is a 422, while the first is running a 409.",
        ),
    ] = None,
) -> KeyedRequest | None:
    if key is None:
        return None
    # The raw body: FastAPI has read it already for a JSON body parameter, and the
    # multipart parser reads the cached copy (this dependency must come before it).
    body = await request.body()
    return KeyedRequest.of(
        key,
        method=request.method,
        path=request.url.path,
        body=body,
        api_key=request.headers.get(API_KEY_HEADER),
    )


SettingsDep = Annotated[Settings, Depends(get_settings)]
ServiceDep = Annotated[RecommendationService, Depends(get_service)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
RecommenderDep = Annotated[Recommender, Depends(get_recommender)]
ItemsDep = Annotated[Items, Depends(get_items)]
InteractionsDep = Annotated[Interactions, Depends(get_interactions)]
FeedbackDep = Annotated[Feedback, Depends(get_feedback)]
ErasureDep = Annotated[UserErasure, Depends(get_erasure)]
BrowserDep = Annotated[Browser, Depends(get_browser)]
IdempotencyDep = Annotated[IdempotencyGuard, Depends(get_idempotency)]
LoaderDep = Annotated[ModelLoader, Depends(get_loader)]
RegistryAdminDep = Annotated[RegistryAdmin | None, Depends(get_registry_admin)]
CanaryAdminDep = Annotated[CanaryAdmin | None, Depends(get_canary_admin)]
"""None when the service does not serve from a registry (the handler answers 404)."""
RegistrationLimiterDep = Annotated[CapacityLimiter, Depends(get_registration_limiter)]
"""Threads for content encoding (``registration_threads``), apart from request work."""
KeyedRequestDep = Annotated[KeyedRequest | None, Depends(get_keyed_request)]
"""The ``Idempotency-Key`` of a write (None without one); declare it before body parsers."""

ReadAccess = Depends(require_read_key)
"""Router/endpoint dependency: API key when ``require_key_for_reads``."""
WriteAccess = Depends(require_write_key)
"""Router/endpoint dependency: API key whenever keys are configured."""
UserReadAccess = Depends(require_user_read_key)
"""Endpoint dependency for paths naming a user: API key unless ``open_user_reads``."""
WriteOrAdminAccess = Depends(require_write_or_admin_key)
"""Endpoint dependency: an API key or an admin key (user erasure)."""
AdminAccess = Depends(require_admin_key)
"""Router dependency of /v1/admin/*: one of ``admin_keys``."""
