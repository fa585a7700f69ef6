"""Recommendations for a user, and items similar to an item (no HTTP; app/routers/recommend.py
and the similar route of app/routers/items.py call these through the service).

Here: the request checks, the user's stored history read (on the event loop for HTTP
requests), the change-feed catch-up for unknown ids, and the hand-over of the model work
(app/answering.py: history -> top-N cache -> fold-in -> index -> fallbacks) to the model
thread, which batches the requests waiting together.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import anyio.to_thread
import numpy as np

from app.answering import NOT_REQUESTED, Answerer, Query, UserLookup, collect_history
from app.errors import InvalidInput, NotFound, PayloadTooLarge
from app.model_thread import ModelThread
from app.parts import Parts, Resource
from app.schemas import HistoryReport, RecommendedItem, RecommendResponse, SimilarResponse
from app.state import ModelState
from app.store.base import StoreUnavailable, UserRead
from app.topn import TopNCache, compute_entry, history_fingerprint
from app.validation import shown


class Recommender(Resource):
    """Recommendations: :meth:`recommend` (blocking, in-process callers) and
    :meth:`recommend_async` (the HTTP handler: the store read on the event loop, the model
    work on the model thread, or inline with ``model_thread`` off)."""

    def __init__(self, parts: Parts) -> None:
        super().__init__(parts)
        self.topn = TopNCache(self.settings.topn_cache_items, self.settings.topn_cache_entries)
        self.answerer = Answerer(self.settings, self.metrics, self.popularity, self.topn)
        self.model_thread = (
            ModelThread(count=self.settings.model_threads, batch_max=self.settings.model_batch_max)
            if self.settings.model_thread
            else None
        )

    def stop(self) -> None:
        if self.model_thread is not None:
            self.model_thread.stop()

    def check_n(self, n: int | None) -> int:
        n = self.settings.default_n if n is None else n
        if n < 1 or n > self.settings.max_n:
            raise InvalidInput(
                f"n must be between 1 and max_n={self.settings.max_n}, got {shown(n)}"
            )
        return n

    def _check_list(self, name: str, values: Sequence[str]) -> None:
        limit = self.settings.max_history
        if len(values) > limit:
            raise PayloadTooLarge(f"{name} has {len(values)} ids; the limit is max_history={limit}")

    def recommend(
        self,
        *,
        domain: str,
        user_id: str | None = None,
        history: Sequence[str] = (),
        n: int | None = None,
        exclude_seen: bool = True,
        exclude: Sequence[str] = (),
        category: str | None = None,
    ) -> RecommendResponse:
        """Top-``n`` items of ``domain`` for a user.

        History = the bundle's history of ``user_id`` + its stored history + ``history``
        (inline ids, any domain). With history the engine embeds the user ("inductive" or
        "cross_domain") and the domain index ranks; without, or when the model yields
        fewer than ``n`` items, the configured fallback chain fills the list. A known
        user's answer may come from the top-N cache (app/topn.py; ``cached`` says so).
        """
        state, q = self._query(
            {
                "domain": domain,
                "user_id": user_id,
                "history": history,
                "n": n,
                "exclude_seen": exclude_seen,
                "exclude": exclude,
                "category": category,
            }
        )
        user = NOT_REQUESTED
        if q.user_id is not None:
            try:
                user = self._looked_up(q.user_id, self.store.read_user(q.user_id, state.domains))
            except StoreUnavailable as err:
                user = self._lookup_failed(q.user_id, err)
        if self._has_unknown(state, q.history):
            self.feed.catch_up()
        return self.answer(state, q, user)

    async def recommend_async(self, **request: Any) -> RecommendResponse:
        """:meth:`recommend` for the event loop: the store read is awaited (Redis: on the
        loop itself), the model work runs inline or on the model thread. Only an unknown
        inline id's change-feed catch-up (rare, blocking) goes to a worker thread."""
        state, q = self._query(request)
        user = NOT_REQUESTED
        if q.user_id is not None:
            try:
                read = await self.store.read_user_async(q.user_id, state.domains)
                user = self._looked_up(q.user_id, read)
            except StoreUnavailable as err:
                user = self._lookup_failed(q.user_id, err)
        if self._has_unknown(state, q.history):
            await anyio.to_thread.run_sync(self.feed.catch_up)
        if self.model_thread is not None:
            return await self.model_thread.run_batched(self.answerer.answer_many, (state, q, user))
        return self.answer(state, q, user)

    def _query(self, request: Mapping[str, Any]) -> tuple[ModelState, Query]:
        """The current state and ``request`` (``recommend``'s keyword arguments) checked."""
        state = self.require_state()
        domain: str = request["domain"]
        state.check_domain(domain)
        n = self.check_n(request.get("n"))
        history: Sequence[str] = request.get("history", ())
        exclude: Sequence[str] = request.get("exclude", ())
        self._check_list("history", history)
        self._check_list("exclude", exclude)
        category = request.get("category")
        prefix = category.strip().lower() if category else None
        exclude_seen = bool(request.get("exclude_seen", True))
        user_id = request.get("user_id")
        return state, Query(domain, user_id, history, n, exclude_seen, exclude, prefix)

    def _looked_up(self, user_id: str, read: UserRead) -> UserLookup:
        self.health.ok()
        if read.erased:
            # An erased user's bundle history is never used (app/erasure.py): the store
            # is asked on every read, so an erasure on any replica counts at once.
            self.erased.add(user_id)
            self.topn.drop_user(user_id)
        return UserLookup("ok", read.erased, read.history)

    def user_history(
        self, state: ModelState, user_id: str
    ) -> tuple[dict[str, list[str]], HistoryReport]:
        """The history a recommend for ``user_id`` would use (bundle + stored, erasure and
        store outages handled the same way), by domain: the console's user view."""
        try:
            user = self._looked_up(user_id, self.store.read_user(user_id, state.domains))
        except StoreUnavailable as err:
            user = self._lookup_failed(user_id, err)
        q = Query(state.domains[0], user_id, (), 1, True, (), None)
        return collect_history(state, q, user, [])

    def _lookup_failed(self, user_id: str, err: StoreUnavailable) -> UserLookup:
        self.health.failed("read history", err)
        return UserLookup("unavailable", user_id in self.erased)

    @staticmethod
    def _has_unknown(state: ModelState, inline: Sequence[str]) -> bool:
        """An inline id this state does not know (it may have been registered on another
        replica moments ago: the caller catches up with the change feed first)."""
        return any(state.item_domain(iid) is None for iid in inline)

    def answer(self, state: ModelState, q: Query, user: UserLookup) -> RecommendResponse:
        """The response for ``q`` given what the store said about the user (the model
        work: app/answering.py)."""
        return self.answerer.answer(state, q, user)

    # --- the top-N cache's feed listener (app/feed.py) ------------------------------------
    def item_changed(
        self, state: ModelState, domain: str, item_id: str, vector: np.ndarray | None
    ) -> None:
        self.topn.item_changed(state, domain, item_id, vector)

    def published(self, state: ModelState) -> None:
        """A (re)load serves: recompute the recently used entries for it, off the request
        path (requests meanwhile compute live and fill the cache themselves)."""
        keys = self.topn.published(state)
        if keys:
            self.topn.refresh_in_background(
                state, keys, self._refresh_entry, lambda s: self.feed.state is s
            )

    def _refresh_entry(self, state: ModelState, user_id: str, domain: str) -> None:
        read = self.store.read_user(user_id, state.domains)
        if read.erased:
            return
        user = UserLookup("ok", False, read.history)
        q = Query(domain, user_id, (), 1, True, (), None)
        by_domain, _ = collect_history(state, q, user, [])
        embedding = state.engine.embed_user(domain, by_domain)
        fingerprint = history_fingerprint(user.history)
        entry = compute_entry(state, domain, by_domain, embedding, fingerprint, self.topn)
        if entry is not None:
            self.topn.put(user_id, domain, entry)

    def similar(self, item_id: str, n: int | None = None) -> SimilarResponse:
        """Nearest items to ``item_id`` by item vector, within its domain."""
        state = self.require_state()
        n = self.check_n(n)
        if state.item_domain(item_id) is None:
            self.feed.catch_up()
        domain = state.item_domain(item_id)
        if domain is None:
            raise NotFound(f"item {shown(item_id)} not found")
        index = state.indexes[domain]
        vector = index.vector(item_id)
        if vector is None:
            raise NotFound(f"item {shown(item_id)} is not in the {shown(domain)} index")
        k = min(len(index), n + 1)
        hits = index.search(vector.reshape(1, -1).astype(np.float32), k, exclude=[{item_id}])[0]
        items = [
            RecommendedItem(item_id=iid, score=float(s), source="model")
            for iid, s in hits
            if iid != item_id
        ][:n]
        return SimilarResponse(
            item_id=item_id, domain=domain, model_version=state.model_version, items=items
        )
