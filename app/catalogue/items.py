"""Items: read any item, register / replace / delete cold-start items (no HTTP;
app/http/routers/items.py calls these through ``ItemsDep``).

The path of a registration: validate -> encode the content (outside any lock: the slow
part) -> under the write lock, a durable store write -> the change is applied to
the current state (engine fold-in + domain index), so a 201 means the item survives a
restart and is served by the next request. A store failure leaves memory untouched
(503 + Retry-After).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from app.api.errors import Conflict, InvalidInput, NotFound, Unavailable
from app.api.schemas import ItemOut
from app.api.validation import shown
from app.catalogue.content import decode_base64_image, open_image
from app.catalogue.images import thumbnail
from app.lifecycle.categories import join_categories, split_categories
from app.lifecycle.parts import Resource
from app.lifecycle.registered import ItemMeta
from app.lifecycle.state import ModelState
from app.runtime.idempotency import same_item
from app.store.base import StoredItem, StoreUnavailable
from model.data.dataset import item_text
from model.encoders.records import EncoderUnavailable


class Items(Resource):
    def get(self, item_id: str) -> ItemOut:
        state = self.require_state()
        pos = state.engine.bundle_position(item_id)
        if pos is not None:
            d, k = pos
            cat = state.engine.catalogue(d)
            return ItemOut(
                item_id=item_id,
                domain=d,
                title=cat.titles[k],
                categories=split_categories(cat.categories[k]),
                origin="bundle",
            )
        meta = state.registered.get(item_id)
        if meta is not None:
            return meta.to_out()
        raise NotFound(f"item {shown(item_id)} not found")

    def _content(
        self,
        state: ModelState,
        *,
        title: str,
        categories: str,
        description: str,
        image_base64: str | None,
        image_bytes: bytes | None,
    ) -> tuple[dict[str, np.ndarray], bytes | None]:
        """The encoded content, and the picture (thumbnail) of the image if any."""
        s = self.settings
        text = item_text(title, categories, description)
        if len(text) > s.max_text_chars:
            raise InvalidInput(
                f"title + categories + description is {len(text)} characters; "
                f"the limit is max_text_chars={s.max_text_chars}"
            )
        if image_base64 is not None and image_bytes is not None:
            raise InvalidInput("send the image either as image_base64 or as a file, not both")
        if image_base64 is not None:
            image_bytes = decode_base64_image(image_base64, max_bytes=s.max_image_bytes)
        image = None
        if image_bytes is not None:
            image = open_image(
                image_bytes,
                max_bytes=s.max_image_bytes,
                max_pixels=s.max_image_pixels,
                max_aspect=s.max_image_aspect_ratio,
            )
        try:
            content = state.engine.encode_content(text=text or None, image=image)
        except EncoderUnavailable as err:  # no weights here for this bundle's encoder
            raise Unavailable(str(err), retry_after_s=60) from None
        except (ValueError, OverflowError, MemoryError) as err:
            raise InvalidInput(f"content cannot be encoded: {str(err)[:200]}") from None
        return content, (None if image is None else thumbnail(image))

    def register(
        self,
        *,
        item_id: str,
        domain: str,
        title: str = "",
        categories: Sequence[str] = (),
        description: str = "",
        image_base64: str | None = None,
        image_bytes: bytes | None = None,
        replace: bool = False,
    ) -> tuple[ItemOut, bool]:
        """Register (or with ``replace`` create-or-replace) a cold-start item.

        Order: validate -> encode -> durable store write -> engine + index, so a 201
        means the item survives a restart and is served by the next request.
        Returns (item, created).
        """
        state = self.require_state()
        state.check_domain(domain)
        if state.is_bundle_item(item_id):
            raise Conflict(f"item {shown(item_id)} is part of the model bundle and is read-only")
        earlier = None if replace else self._earlier(state, item_id)
        cats = join_categories(list(categories))
        fields = {"title": title, "categories": cats, "description": description}

        # Encoding is the slow part: do it outside the write lock.
        content, picture = self._content(
            state, image_base64=image_base64, image_bytes=image_bytes, **fields
        )
        if earlier is not None:  # a retry of the same registration is answered, not refused
            if same_item(earlier, domain=domain, fields=fields, content=content):
                return self._item_out(state, earlier), False
            raise Conflict(f"item {shown(item_id)} already exists; use PUT to replace it")
        with self.served.lock:
            current = self.require_state()
            if current is not state:
                # A reload swapped the model while we encoded: encode for the new one.
                state = current
                state.check_domain(domain)
                content, picture = self._content(
                    state, image_base64=image_base64, image_bytes=image_bytes, **fields
                )
            existing = state.registered.get(item_id)
            if not replace and existing is not None:
                raise Conflict(f"item {shown(item_id)} already exists; use PUT to replace it")
            now = time.time()
            stored = StoredItem(
                item_id=item_id,
                domain=domain,
                content=content,
                created_at=existing.created_at if existing else now,
                updated_at=now,
                picture=picture,
                **fields,
            )
            try:
                seq = self.store.put_item(stored)
            except StoreUnavailable as err:
                check = f"GET /v1/items/{item_id}"
                raise self.health.unavailable("item", err, check) from None
            self.health.ok()
            meta = self.feed.apply_upsert(state, stored, seq)
        assert meta is not None  # domain checked above; bundle ids refused above
        return meta.to_out(), existing is None

    def _earlier(self, state: ModelState, item_id: str) -> StoredItem | None:
        """The stored item ``item_id`` (a POST for it is a retry or a conflict), or None."""
        try:
            # The store, not memory: another replica may have registered it moments ago.
            found = self.store.get_item(item_id)
        except StoreUnavailable as err:
            raise self.health.unavailable("item", err, attempted=False) from None
        if found is None and item_id in state.registered:  # store lost it: cannot compare
            raise Conflict(f"item {shown(item_id)} already exists; use PUT to replace it")
        return found

    @staticmethod
    def _item_out(state: ModelState, item: StoredItem) -> ItemOut:
        # Not in ``state`` when another replica registered it and it is not synced here yet.
        return (state.registered.get(item.item_id) or ItemMeta.of(item)).to_out()

    def delete(self, item_id: str) -> None:
        state = self.require_state()
        if state.is_bundle_item(item_id):
            raise Conflict(
                f"item {shown(item_id)} is part of the model bundle and cannot be deleted"
            )
        with self.served.lock:
            state = self.require_state()
            try:
                seq = self.store.delete_item(item_id)
            except StoreUnavailable as err:
                check = f"GET /v1/items/{item_id} (404 once deleted)"
                raise self.health.unavailable("delete", err, check) from None
            self.health.ok()
            if seq is None:
                if item_id in state.registered:  # store lost it: still drop it here
                    self.feed.apply_delete(state, item_id, state.feed_seq)
                    return
                raise NotFound(f"item {shown(item_id)} not found")
            self.feed.apply_delete(state, item_id, seq)
