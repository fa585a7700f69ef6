"""Items: register cold-start items (JSON or multipart), read, replace, delete, similar.

``POST /v1/items`` and ``PUT /v1/items/{id}`` accept either ``application/json``
(image as ``image_base64``) or ``multipart/form-data`` (the same fields as form fields,
``categories`` repeated or "a|b", and the image as a file part named ``image``).
Bundle items are read-only: GET works, PUT/DELETE answer 409.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response, status
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile

from app.api.errors import InvalidInput, PayloadTooLarge
from app.api.ids import Id
from app.api.ids import ItemId as ItemIdType
from app.api.schemas import (
    ItemIn,
    ItemOut,
    ItemUpdate,
    SimilarResponse,
)
from app.api.schemas_console import ItemPage
from app.api.validation import shown
from app.catalogue.images import CONTENT_TYPES
from app.catalogue.items import Items
from app.http.deps import (
    BrowserDep,
    IdempotencyDep,
    ItemsDep,
    KeyedRequestDep,
    ReadAccess,
    RecommenderDep,
    RegistrationLimiterDep,
    SettingsDep,
    WriteAccess,
)
from app.http.routers.common import (
    ERRORS_READ,
    ERRORS_WRITE,
    NOT_FOUND,
    UNSUPPORTED_MEDIA,
    answer_response,
)

router = APIRouter(prefix="/v1/items", tags=["items"])

ItemId = Annotated[ItemIdType, Path()]
"""A registered item's id (PUT, DELETE): never holds "/"."""
AnyItemId = Annotated[Id, Path()]
"""Any item's id (reads): a bundle's ids may hold "/", so the read routes take the rest of
the path; the /similar and /image routes come first, so their suffix ends the id."""
FILE_FIELD = "image"
LIST_FIELD = "categories"


@dataclass
class ItemPayload:
    """A parsed item body: the fields plus the raw bytes of an uploaded image file."""

    item: ItemIn
    image_bytes: bytes | None


def _request_body(model: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI requestBody listing both accepted content types (parsed by hand below)."""
    schema = model.model_json_schema()
    form = {
        "type": "object",
        "properties": {
            **{k: v for k, v in schema["properties"].items() if k != "categories"},
            "categories": {"type": "array", "items": {"type": "string"}},
            "image": {"type": "string", "format": "binary", "description": "Image file"},
        },
        "required": schema.get("required", []),
    }
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": schema},
                "multipart/form-data": {"schema": form},
            },
        }
    }


async def _read_upload(upload: UploadFile, max_bytes: int) -> bytes:
    # Read one byte past the limit: enough to know it is too large without reading it all.
    try:
        data = await upload.read(max_bytes + 1)
    finally:
        await upload.close()  # release the spooled temporary file now, not at GC
    if len(data) > max_bytes:
        raise PayloadTooLarge(f"image file is larger than max_image_bytes={max_bytes} bytes")
    return data


def _payload_parser(model: type[ItemIn]) -> Any:
    async def parse(request: Request, settings: SettingsDep) -> ItemPayload:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        try:
            if ctype == "application/json":
                return ItemPayload(model.model_validate_json(await request.body()), None)
            if ctype == "multipart/form-data":
                form = await request.form(
                    max_files=1, max_fields=50, max_part_size=settings.max_body_bytes
                )
                # Every other field goes to the model, so unknown ones are refused as in JSON.
                fields: dict[str, Any] = {
                    k: v for k, v in form.items() if k not in (FILE_FIELD, LIST_FIELD)
                }
                cats = form.getlist(LIST_FIELD)
                if cats:
                    fields[LIST_FIELD] = cats
                image = form.get(FILE_FIELD)
                data = None
                if isinstance(image, UploadFile):
                    data = await _read_upload(image, settings.max_image_bytes)
                elif isinstance(image, str):
                    raise InvalidInput("the image form field must be a file upload")
                return ItemPayload(model.model_validate(fields), data)
        except ValidationError as err:
            # Same shape as FastAPI's own body errors: locations start with "body".
            errors = [{**e, "loc": ("body", *e["loc"])} for e in err.errors(include_url=False)]
            raise RequestValidationError(errors) from None
        raise HTTPException(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            "send application/json or multipart/form-data",
        )

    return parse


NewItem = Annotated[ItemPayload, Depends(_payload_parser(ItemIn))]
ItemReplacement = Annotated[ItemPayload, Depends(_payload_parser(ItemUpdate))]


def _register(
    items: Items, item_id: str, payload: ItemPayload, *, replace: bool
) -> tuple[ItemOut, bool]:
    """``Items.register`` with the parsed body's fields: (item, created)."""
    item = payload.item
    return items.register(
        item_id=item_id,
        domain=item.domain,
        title=item.title,
        categories=item.categories,
        description=item.description,
        image_base64=item.image_base64,
        image_bytes=payload.image_bytes,
        replace=replace,
    )


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=ItemOut,
    dependencies=[WriteAccess],
    responses={
        **ERRORS_WRITE,
        **UNSUPPORTED_MEDIA,
        200: {"model": ItemOut, "description": "Already registered with this content (retry)"},
    },
    openapi_extra=_request_body(ItemIn),
)
async def create_item(
    keyed: KeyedRequestDep,  # first: it reads the raw body before the multipart parser
    payload: NewItem,
    items: ItemsDep,
    idempotency: IdempotencyDep,
    limiter: RegistrationLimiterDep,
    response: Response,
) -> ItemOut | Response:
    """Register a cold-start item from its content; it is recommendable as soon as this
    returns 201. A content-identical re-POST (a retry) answers 200 with the stored item;
    409 if the id exists with other content (bundle or registered). With an
    Idempotency-Key, a retry gets the first answer again (201 included)."""
    register = partial(_register, items, payload.item.item_id, payload, replace=False)

    def write() -> tuple[int, ItemOut]:
        item, created = register()
        return (status.HTTP_201_CREATED if created else status.HTTP_200_OK), item

    if keyed is not None:
        keyed_write = partial(idempotency.run, keyed, write)
        return answer_response(await anyio.to_thread.run_sync(keyed_write, limiter=limiter))
    response.status_code, item = await anyio.to_thread.run_sync(write, limiter=limiter)
    return item


@router.get("", dependencies=[ReadAccess], responses=ERRORS_READ)
def list_items(
    browser: BrowserDep,
    domain: Annotated[
        Id | None, Query(description="Domain to list (required without ids).")
    ] = None,
    q: Annotated[str | None, Query(max_length=200, description="Part of the title or id.")] = None,
    category: Annotated[
        str | None, Query(max_length=200, description="Category prefix (as in /v1/recommend).")
    ] = None,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=100)] = 24,
    ids: Annotated[
        list[Id] | None, Query(max_length=100, description="These items (any domain), in order.")
    ] = None,
) -> ItemPage:
    """Browse or search a domain's items (registered newest first, then bundle items by
    training degree), or look up ``ids``; each with its degree and whether it has a picture."""
    if ids:
        return browser.details(ids)
    if domain is None:
        raise InvalidInput("give a domain (or ids)")
    return browser.search(domain, q=q, category=category, offset=offset, limit=limit)


@router.get(
    "/{item_id:id}/similar", dependencies=[ReadAccess], responses={**ERRORS_READ, **NOT_FOUND}
)
def similar_items(
    item_id: AnyItemId,
    recommender: RecommenderDep,
    n: Annotated[int | None, Query(ge=1, description="Items wanted (1..max_n).")] = None,
) -> SimilarResponse:
    """Nearest items to this one by item vector, in the same domain."""
    return recommender.similar(item_id, n)


@router.get(
    "/{item_id:id}/image",
    dependencies=[ReadAccess],
    response_class=Response,
    responses={
        **ERRORS_READ,
        **NOT_FOUND,
        200: {"content": {m: {} for m in CONTENT_TYPES.values()}, "description": "The picture"},
    },
)
def item_image(item_id: AnyItemId, browser: BrowserDep) -> Response:
    """The item's picture (bundle items with a file in item_images_dir); 404 without one."""
    picture = browser.picture(item_id)
    headers = {"Cache-Control": "private, max-age=300", "X-Content-Type-Options": "nosniff"}
    return Response(picture.data, media_type=picture.content_type, headers=headers)


@router.get("/{item_id:id}", dependencies=[ReadAccess], responses={**ERRORS_READ, **NOT_FOUND})
def get_item(item_id: AnyItemId, items: ItemsDep) -> ItemOut:
    return items.get(item_id)


@router.put(
    "/{item_id:id}",
    dependencies=[WriteAccess],
    responses={
        **ERRORS_WRITE,
        **UNSUPPORTED_MEDIA,
        201: {"model": ItemOut, "description": "Created"},
    },
    openapi_extra=_request_body(ItemUpdate),
)
async def replace_item(
    item_id: ItemId,
    payload: ItemReplacement,
    items: ItemsDep,
    limiter: RegistrationLimiterDep,
    response: Response,
) -> ItemOut:
    """Create or replace a registered item (200 replaced, 201 created); bundle items 409."""
    if payload.item.item_id not in (None, item_id):
        raise InvalidInput(
            f"item_id in the body ({shown(payload.item.item_id)}) differs from the path ({shown(item_id)})"
        )
    update = partial(_register, items, item_id, payload, replace=True)
    item, created = await anyio.to_thread.run_sync(update, limiter=limiter)
    if created:
        response.status_code = status.HTTP_201_CREATED
    return item


@router.delete(
    "/{item_id:id}",
    status_code=status.HTTP_204_NO_CONTENT,
    dependencies=[WriteAccess],
    responses=ERRORS_WRITE,
)
def delete_item(item_id: ItemId, items: ItemsDep) -> None:
    """Remove a registered item (bundle items: 409)."""
    items.delete(item_id)
