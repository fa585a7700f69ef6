"""Recommendations for a user, and items similar to an item (no HTTP; app/http/routers/recommend.py
and the similar route of app/http/routers/items.py call these through ``RecommenderDep``).

Here: the request checks, the user's stored history read (on the event loop for HTTP
requests), the change-feed catch-up for unknown ids, and the hand-over of the model work
(app/serving/answering.py: history -> top-N cache -> fold-in -> index -> fallbacks) to the model
thread, which batches the requests waiting together.
"""

from __future__ import annotations

import threading
from collections.abc import Coroutine, Sequence
from functools import partial
from typing import Protocol, TypeVar

import anyio.to_thread
import numpy as np

from app.api.errors import InvalidInput, NotFound, PayloadTooLarge
from app.api.schemas import (
    HistoryReport,
    QueryIn,
    RecommendedItem,
    RecommendRequest,
    RecommendResponse,
    SimilarResponse,
)
from app.api.validation import shown
from app.feedback.recording import RecommendationRecorder
from app.lifecycle.parts import Parts, Resource
from app.lifecycle.state import ModelState
from app.serving.answering import NOT_REQUESTED, Answerer, Job, Query, UserLookup, collect_history
from app.serving.model_thread import ModelThread
from app.serving.topn import TopNCache, compute_entry, history_fingerprint
from app.store.base import StoreUnavailable, UserRead
from model.serving_types import UserEmbedding

T = TypeVar("T")


def _finish_now(steps: Coroutine[object, object, T]) -> T:
    """The result of a coroutine that never suspends (its I/O is blocking), without an
    event loop: the blocking entry points run the same steps as the awaited ones."""
    try:
        steps.send(None)
    except StopIteration as done:
        result: T = done.value
        return result
    steps.close()
    raise RuntimeError("a blocking recommend step suspended")


class QueryEmbedding(Protocol):
    """Checks and embeds a query (app/catalogue/queries.py; handed in by the service)."""

    def check(self, query: QueryIn) -> None: ...

    def embed(self, state: ModelState, domain: str, query: QueryIn) -> UserEmbedding: ...


class Recommender(Resource):
    """Recommendations: :meth:`recommend_async` (the HTTP handlers: the store read on the
    event loop, the model work on the model thread, or inline with ``model_thread`` off)
    and :meth:`recommend` (blocking, for in-process callers: benchmarks, tests). Both take
    the request through the same steps (:meth:`_prepare`). A request with a ``query`` is
    embedded by ``queries`` (the encoder process; off the event loop) instead of folded in."""

    def __init__(
        self,
        parts: Parts,
        recorder: RecommendationRecorder,
        queries: QueryEmbedding | None = None,
    ) -> None:
        super().__init__(parts)
        self.recorder = recorder
        self.queries = queries
        self.topn = TopNCache(self.settings.topn_cache_items, self.settings.topn_cache_entries)
        self.answerer = Answerer(self.settings, self.metrics, self.popularity, self.topn)
        self.model_thread = (
            ModelThread(count=self.settings.model_threads, batch_max=self.settings.model_batch_max)
            if self.settings.model_thread
            else None
        )
        self._stopping = threading.Event()

    def stop(self, timeout: float = 10.0) -> None:
        """End the top-N refresh (after the entry it is computing) and the model thread."""
        self._stopping.set()
        self.topn.wait_refresh(timeout)
        if self.model_thread is not None:
            self.model_thread.stop(timeout)

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

    async def recommend_async(self, request: RecommendRequest) -> RecommendResponse:
        """Top-``n`` items of ``request.domain`` for a user.

        History = the bundle's history of ``user_id`` + its stored history + ``history``
        (inline ids, any domain). With history the engine embeds the user ("inductive" or
        "cross_domain") and the domain index ranks; without, or when the model yields
        fewer than ``n`` items, the configured fallback chain fills the list. A known
        user's answer may come from the top-N cache (app/serving/topn.py; ``cached`` says so).

        The store read is awaited (Redis: on the loop itself); the model work runs on the
        model thread, with the other requests waiting then (app/serving/answering.py), or inline.
        """
        job = await self._prepare(request, blocking=False)
        if self.model_thread is not None:
            answer = await self.model_thread.run_batched(self.answerer.answer_many, job)
        else:
            answer = self.answerer.answer(job)
        return self._recorded(job, answer, request.session_id)

    def recommend(self, request: RecommendRequest) -> RecommendResponse:
        """:meth:`recommend_async` for callers without an event loop: the same steps, the
        store read blocking, the model work inline on the calling thread."""
        job = self.prepare(request)
        return self._recorded(job, self.answerer.answer(job), request.session_id)

    def _recorded(
        self, job: Job, answer: RecommendResponse, session_id: str | None
    ) -> RecommendResponse:
        """``answer`` with its recommendation_id, its list queued for the store
        (app/feedback/recording.py: no store call here)."""
        index = job.state.indexes.get(answer.domain)
        self.recorder.record(
            answer,
            user_id=job.query.user_id,
            session_id=session_id,
            catalogue_size=0 if index is None else len(index),
        )
        return answer

    def prepare(self, request: RecommendRequest) -> Job:
        """The model work ``request`` asks for, with its store read done (blocking)."""
        return _finish_now(self._prepare(request, blocking=True))

    async def _prepare(self, request: RecommendRequest, *, blocking: bool) -> Job:
        """Everything before the model work: the current state (read once, used to the
        end), the request's checks, the user's stored history and erasure flag, and a
        change-feed catch-up when an inline id is unknown here. ``blocking``: the store
        read and the catch-up run here (this coroutine then never suspends); otherwise the
        read is awaited and only the catch-up (rare) goes to a worker thread."""
        state = self.require_state()
        canary = self.served.canary
        if canary is not None and canary.takes(request.user_id or request.session_id):
            state = canary.state  # app/lifecycle/canary.py: a stable share of users
        q = self._checked(state, request)
        if request.query is not None:
            return Job(
                state, q, NOT_REQUESTED, await self._embed_query(state, q, request, blocking)
            )
        user = NOT_REQUESTED
        if q.user_id is not None:
            try:
                if blocking:
                    read = self.store.read_user(q.user_id, state.domains)
                else:
                    read = await self.store.read_user_async(q.user_id, state.domains)
                user = self._looked_up(q.user_id, read)
            except StoreUnavailable as err:
                user = self._lookup_failed(q.user_id, err)
        if self._has_unknown(state, q.history):
            if blocking:
                self.sync.catch_up()
            else:
                await anyio.to_thread.run_sync(self.sync.catch_up)
        return Job(state, q, user)

    async def _embed_query(
        self, state: ModelState, q: Query, request: RecommendRequest, blocking: bool
    ) -> UserEmbedding:
        """A query's user vector: decoding and encoding (the encoder process, bounded by
        ``encoder_timeout_s`` and ``encoder_queue``) on a worker thread."""
        assert request.query is not None
        if self.queries is None:
            raise InvalidInput("this service takes no queries")
        self.queries.check(request.query)
        embed = partial(self.queries.embed, state, q.domain, request.query)
        if blocking:
            return embed()
        return await anyio.to_thread.run_sync(embed)

    def _checked(self, state: ModelState, request: RecommendRequest) -> Query:
        """``request`` checked against the settings and ``state``, defaults filled in."""
        state.check_domain(request.domain)
        n = self.check_n(request.n)
        self._check_list("history", request.history)
        self._check_list("exclude", request.exclude)
        category = request.category
        if request.query is not None and (request.user_id is not None or request.history):
            raise InvalidInput(
                "a query starts a visitor without history: send query, or user_id/history, not both"
            )
        return Query(
            domain=request.domain,
            user_id=request.user_id,
            history=request.history,
            n=n,
            exclude_seen=request.exclude_seen,
            exclude=request.exclude,
            prefix=category.strip().lower() if category else None,
        )

    def _looked_up(self, user_id: str, read: UserRead) -> UserLookup:
        self.health.ok()
        if read.erased:
            # An erased user's bundle history is never used (app/users/erasure.py): the store
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
        return collect_history(state, user_id, (), user, [])

    def _lookup_failed(self, user_id: str, err: StoreUnavailable) -> UserLookup:
        self.health.failed("read history", err)
        return UserLookup("unavailable", user_id in self.erased)

    @staticmethod
    def _has_unknown(state: ModelState, inline: Sequence[str]) -> bool:
        """An inline id this state does not know (it may have been registered on another
        replica moments ago: the caller catches up with the change feed first)."""
        return any(state.item_domain(iid) is None for iid in inline)

    # --- the top-N cache as a listener of the served model (app/lifecycle/served.py) ---------------
    def item_changed(
        self, state: ModelState, domain: str, item_id: str, vector: np.ndarray | None
    ) -> None:
        self.topn.item_changed(state, domain, item_id, vector)

    def published(self, state: ModelState) -> None:
        """A (re)load serves: recompute the recently used entries for it, off the request
        path (requests meanwhile compute live and fill the cache themselves)."""
        keys = self.topn.published(state)
        if keys:
            self.topn.refresh_in_background(state, keys, self._refresh_entry, self._still_serves)

    def _still_serves(self, state: ModelState) -> bool:
        """Whether a top-N refresh for ``state`` should go on."""
        return self.served.state is state and not self._stopping.is_set()

    def _refresh_entry(self, state: ModelState, user_id: str, domain: str) -> None:
        read = self.store.read_user(user_id, state.domains)
        if read.erased:
            return
        user = UserLookup("ok", False, read.history)
        by_domain, _ = collect_history(state, user_id, (), user, [])
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
            self.sync.catch_up()
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
