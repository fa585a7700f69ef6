"""Reads for browsing the catalogue and a user (no HTTP; the item list, item pictures and
``GET /v1/users/{id}/history`` routes call these through ``BrowserDep``).

The item list: registered items first (newest first), then bundle items by training
degree, most connected first (that order is computed once per model state). A search (part
of the title or id, a category prefix) scans the domain: a cost linear in its size, paid
only by filtered requests.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from app.api.errors import NotFound, PayloadTooLarge, Unavailable
from app.api.schemas_console import ItemPage, ItemSummary, UserHistory
from app.api.validation import shown
from app.catalogue.images import BundlePictures, Picture, PictureRefused
from app.lifecycle.categories import category_matches, split_categories
from app.lifecycle.parts import Parts, Resource
from app.lifecycle.state import ModelState
from app.serving.recommend import Recommender
from app.store.base import StoreUnavailable

MAX_PAGE = 100
"""Most items in one page of the item list, and most ids in one ``ids`` lookup."""


class Browser(Resource):
    def __init__(self, parts: Parts, recommender: Recommender) -> None:
        super().__init__(parts)
        self.recommender = recommender
        self.pictures = BundlePictures(
            self.settings.item_images_dir,
            self.settings.max_image_bytes,
            self.settings.max_image_pixels,
        )
        self._orders: dict[tuple[int, str], np.ndarray] = {}
        """(state generation, domain) -> catalogue rows by training degree, highest first."""

    # --- the item list ----------------------------------------------------------------
    def search(
        self,
        domain: str,
        *,
        q: str | None = None,
        category: str | None = None,
        offset: int = 0,
        limit: int = 24,
    ) -> ItemPage:
        """Items of ``domain`` whose title or id contains ``q`` and whose categories match
        ``category`` (the prefix rule of recommendation filters), one page of them."""
        state = self.require_state()
        state.check_domain(domain)
        limit = min(limit, MAX_PAGE)
        needle = q.strip().lower() if q else ""
        prefix = category.strip().lower() if category else ""

        def hit(title: str, item_id: str, categories: str) -> bool:
            if needle and needle not in title.lower() and needle not in item_id.lower():
                return False
            return not prefix or category_matches(categories, prefix)

        registered = []
        for item_id, _ in state.registered.latest(domain):
            meta = state.registered.get(item_id)
            if meta is not None and hit(meta.title, item_id, meta.categories):
                registered.append(item_id)
        cat = state.engine.catalogue(domain)
        rows: np.ndarray | list[int] = self._degree_order(state, domain)
        if needle or prefix:  # unfiltered, the degree order is the answer: no scan
            rows = [r for r in rows if hit(cat.titles[r], cat.item_ids[r], cat.categories[r])]
        first, last = offset - len(registered), offset + limit - len(registered)
        page = registered[offset : offset + limit]
        page += [cat.item_ids[r] for r in rows[max(0, first) : max(0, last)]]
        return ItemPage(
            domain=domain,
            total=len(registered) + len(rows),
            offset=offset,
            items=self._summaries(state, page),
        )

    def details(self, ids: Sequence[str]) -> ItemPage:
        """Summaries of ``ids`` (any domains), in the given order; unknown ids left out."""
        if len(ids) > MAX_PAGE:
            raise PayloadTooLarge(f"ids has {len(ids)} ids; the limit is {MAX_PAGE}")
        state = self.require_state()
        found = self._summaries(state, ids)
        return ItemPage(domain=None, total=len(found), offset=0, items=found)

    def _degree_order(self, state: ModelState, domain: str) -> np.ndarray:
        key = (state.generation, domain)
        order = self._orders.get(key)
        if order is None:
            popularity = np.asarray(state.engine.catalogue(domain).popularity)
            order = np.argsort(-popularity, kind="stable")
            # Only the current state's orders are kept: older generations are dropped.
            self._orders = {k: v for k, v in self._orders.items() if k[0] == state.generation}
            self._orders[key] = order
        return order

    def _summaries(self, state: ModelState, ids: Sequence[str]) -> list[ItemSummary]:
        out = []
        for item_id in ids:
            pos = state.engine.bundle_position(item_id)
            if pos is not None:
                d, row = pos
                cat = state.engine.catalogue(d)
                out.append(
                    ItemSummary(
                        item_id=item_id,
                        domain=d,
                        title=cat.titles[row],
                        categories=split_categories(cat.categories[row]),
                        origin="bundle",
                        degree=int(cat.popularity[row]),
                        interactions=self.popularity.count(d, item_id),
                        image=self.pictures.has(item_id),
                    )
                )
                continue
            meta = state.registered.get(item_id)
            if meta is not None:
                out.append(
                    ItemSummary(
                        item_id=item_id,
                        domain=meta.domain,
                        title=meta.title,
                        categories=split_categories(meta.categories),
                        origin="api",
                        degree=0,
                        interactions=self.popularity.count(meta.domain, item_id),
                        image=meta.picture,
                    )
                )
        return out

    # --- pictures ---------------------------------------------------------------------
    def picture(self, item_id: str) -> Picture:
        state = self.require_state()
        found = None
        if state.is_bundle_item(item_id):
            try:
                found = self.pictures.read(item_id)
            except PictureRefused as err:
                raise NotFound(f"item {shown(item_id)} has no servable picture: {err}") from None
        else:
            # The store, not memory: it is where registered pictures live (any replica's).
            try:
                stored = self.store.get_item(item_id)
            except StoreUnavailable as err:
                self.health.failed("read picture", err)
                raise Unavailable(
                    "state store unavailable: the picture cannot be read now, retry later",
                    retry_after_s=self.settings.store_retry_after_s,
                ) from None
            self.health.ok()
            if stored is None:
                raise NotFound(f"item {shown(item_id)} not found")
            if stored.picture is not None:
                found = Picture(stored.picture, "image/webp")
        if found is None:
            raise NotFound(f"item {shown(item_id)} has no picture")
        return found

    # --- a user's history -------------------------------------------------------------
    def history(self, user_id: str) -> UserHistory:
        """What a recommend for ``user_id`` uses as history (bundle + stored), by domain."""
        state = self.require_state()
        # The very function a recommend collects its history with (erasure included).
        by_domain, report = self.recommender.user_history(state, user_id)
        return UserHistory(
            user_id=user_id, known_user=report.known_user, stored=report.stored, domains=by_domain
        )
