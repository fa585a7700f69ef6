"""Recommendations for a user, and items similar to an item (no HTTP; app/routers/recommend.py
and the similar route of app/routers/items.py call these through the service).

The path of a recommend: collect the user's history (bundle + store + inline ids) ->
the engine embeds the user (fold-in) -> the domain index ranks (exact scoring for a
selective category filter) -> the fallback chain (app/fallbacks.py) fills what the model
could not.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, cast

import anyio.to_thread
import numpy as np

from app import fallbacks
from app.content import category_matches
from app.engine import embedding_method
from app.errors import InvalidInput, NotFound, PayloadTooLarge
from app.model_thread import ModelThread
from app.parts import Parts, Resource
from app.schemas import (
    HistoryReport,
    RecommendedItem,
    RecommendResponse,
    SimilarResponse,
    StoredHistory,
    UserEmbeddingMethod,
)
from app.state import ModelState
from app.store.base import StoreUnavailable, UserRead
from app.topn import TopNCache, compute_entry, history_fingerprint
from model.inference import UserEmbedding


@dataclass(frozen=True)
class Query:
    """A recommend request, checked against the settings and the state's domains."""

    domain: str
    user_id: str | None
    history: Sequence[str]
    n: int
    exclude_seen: bool
    exclude: Sequence[str]
    prefix: str | None
    """The category filter, normalised (``category_matches``)."""


@dataclass(frozen=True)
class UserLookup:
    """What the store said about ``Query.user_id`` (``stored`` = how the read went)."""

    stored: StoredHistory
    erased: bool = False
    history: dict[str, list[str]] = field(default_factory=dict)


NOT_REQUESTED = UserLookup("not_requested")


class Recommender(Resource):
    """Recommendations: :meth:`recommend` (blocking, in-process callers) and
    :meth:`recommend_async` (the HTTP handler: the store read on the event loop, the model
    work on the model thread, or inline with ``model_thread`` off)."""

    def __init__(self, parts: Parts) -> None:
        super().__init__(parts)
        self.topn = TopNCache(self.settings.topn_cache_items, self.settings.topn_cache_entries)
        self.model_thread = (
            ModelThread(count=self.settings.model_threads) if self.settings.model_thread else None
        )

    def stop(self) -> None:
        if self.model_thread is not None:
            self.model_thread.stop()

    def check_n(self, n: int | None) -> int:
        n = self.settings.default_n if n is None else n
        if n < 1 or n > self.settings.max_n:
            raise InvalidInput(f"n must be between 1 and max_n={self.settings.max_n}, got {n}")
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
            return await self.model_thread.run(partial(self.answer, state, q, user))
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
        return self._collect_history(state, q, user, [])

    def _lookup_failed(self, user_id: str, err: StoreUnavailable) -> UserLookup:
        self.health.failed("read history", err)
        return UserLookup("unavailable", user_id in self.erased)

    @staticmethod
    def _has_unknown(state: ModelState, inline: Sequence[str]) -> bool:
        """An inline id this state does not know (it may have been registered on another
        replica moments ago: the caller catches up with the change feed first)."""
        return any(state.item_domain(iid) is None for iid in inline)

    # --- the model work (no store access: inline on the loop or on the model thread) ---
    def answer(self, state: ModelState, q: Query, user: UserLookup) -> RecommendResponse:
        """The response for ``q`` given what the store said about the user."""
        warnings: list[str] = []
        if user.stored == "unavailable":
            warnings.append(
                "history store unavailable: using the bundle's and the inline history only"
            )
        by_domain, report = self._collect_history(state, q, user, warnings)
        domain, n = q.domain, q.n
        # A selective filter's items, looked up once for the model and the fallback chain.
        matching = None if q.prefix is None else state.category_candidates(domain, q.prefix)
        cacheable = (
            self.topn.enabled
            and user.stored == "ok"
            and not user.erased
            and not q.history
            and q.exclude_seen
            and matching is None
        )
        embedding = None
        if cacheable:
            answer, embedding = self._from_cache(state, q, user, by_domain, report, warnings)
            if answer is not None:
                return answer
        if embedding is None:
            embedding = state.engine.embed_user(domain, by_domain)
        report.items_used = embedding.n_history

        excluded = set(q.exclude)
        if q.exclude_seen:
            excluded.update(i for ids in by_domain.values() for i in ids)

        items: list[RecommendedItem] = []
        embedded = embedding_method(embedding)
        method: UserEmbeddingMethod
        if embedded != "none":
            method = embedded
            items = self._model_candidates(
                state, domain, embedding.vector, n, excluded, q.prefix, matching
            )
        else:
            method = "fallback"
        if len(items) < n:
            taken = excluded | {it.item_id for it in items}
            before = len(items)
            fq = fallbacks.FallbackQuery(state, domain, self.popularity, matching)
            chain = self.settings.fallback_chain
            items += fallbacks.fill(chain, fq, n - len(items), taken, q.prefix)
            if len(items) > before:
                self.metrics.fallbacks.labels(domain).inc()
        if not items:
            warnings.append("no items matched (empty index, filters or exclusions)")
        return self._respond(state, q, method, items, report, warnings, cached=False)

    def _from_cache(
        self,
        state: ModelState,
        q: Query,
        user: UserLookup,
        by_domain: dict[str, list[str]],
        report: HistoryReport,
        warnings: list[str],
    ) -> tuple[RecommendResponse | None, UserEmbedding | None]:
        """The answer from the user's top-N list (computed now on a miss), or None and the
        embedding computed on the way (the live path reuses it)."""
        assert q.user_id is not None  # cacheable requests name a user
        fingerprint = history_fingerprint(user.history)
        entry = self.topn.get(state, q.user_id, q.domain, fingerprint)
        embedding = None
        if entry is None:
            embedding = state.engine.embed_user(q.domain, by_domain)
            entry = compute_entry(state, q.domain, by_domain, embedding, fingerprint, self.topn)
            if entry is not None:
                self.topn.put(q.user_id, q.domain, entry)
        if entry is not None:
            keep = None
            if q.prefix is not None:
                prefix = q.prefix
                keep = lambda iid: category_matches(state.categories_of(iid), prefix)  # noqa: E731
            picked = entry.pick(q.n, set(q.exclude), keep)
            if picked is not None:
                report.items_used = entry.items_used
                items = [RecommendedItem(item_id=i, score=s, source="model") for i, s in picked]
                self.metrics.topn_cache.labels(q.domain, "hit").inc()
                how = cast(UserEmbeddingMethod, entry.method)
                return self._respond(state, q, how, items, report, warnings, cached=True), None
        self.metrics.topn_cache.labels(q.domain, "miss").inc()
        return None, embedding

    def _respond(
        self,
        state: ModelState,
        q: Query,
        method: UserEmbeddingMethod,
        items: list[RecommendedItem],
        report: HistoryReport,
        warnings: list[str],
        *,
        cached: bool,
    ) -> RecommendResponse:
        m = self.metrics
        m.recommendations.labels(q.domain, method).inc()
        for source, count in Counter(it.source for it in items).items():
            m.items_served.labels(q.domain, source).inc(count)
        return RecommendResponse(
            domain=q.domain,
            n=q.n,
            model_version=state.model_version,
            user_embedding=method,
            items=items,
            history=report,
            warnings=warnings,
            cached=cached,
        )

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
        by_domain, _ = self._collect_history(state, q, user, [])
        embedding = state.engine.embed_user(domain, by_domain)
        fingerprint = history_fingerprint(user.history)
        entry = compute_entry(state, domain, by_domain, embedding, fingerprint, self.topn)
        if entry is not None:
            self.topn.put(user_id, domain, entry)

    def _collect_history(
        self,
        state: ModelState,
        q: Query,
        user: UserLookup,
        warnings: list[str],
    ) -> tuple[dict[str, list[str]], HistoryReport]:
        """domain -> item ids: bundle history + stored history + inline history."""
        by_domain: dict[str, list[str]] = {}
        known = False
        if q.user_id is not None:
            if not user.erased:
                for d, ids in state.engine.bundle_history(q.user_id).items():
                    by_domain[d] = list(ids)
            for d, ids in user.history.items():
                if d in by_domain:
                    by_domain[d].extend(ids)
                else:
                    by_domain[d] = list(ids)
            known = bool(by_domain)
        unknown: list[str] = []
        for iid in q.history:
            item_domain = state.item_domain(iid)
            if item_domain is None:
                unknown.append(iid)
            else:
                by_domain.setdefault(item_domain, []).append(iid)
        if unknown:
            warnings.append(f"{len(unknown)} history ids are not in the catalogue and were ignored")
        report = HistoryReport(
            stored=user.stored,
            known_user=known,
            items_used=0,
            unknown_ids=unknown[:20],
        )
        return by_domain, report

    @staticmethod
    def _model_candidates(
        state: ModelState,
        domain: str,
        vector: np.ndarray,
        n: int,
        excluded: set[str],
        prefix: str | None,
        matching: list[str] | None,
    ) -> list[RecommendedItem]:
        """Top ``n`` by the model; ``matching`` = the filter's items when it is selective
        (:meth:`ModelState.category_candidates`)."""
        index = state.indexes[domain]
        size = len(index)
        if size == 0:
            return []
        query = np.asarray(vector, dtype=np.float32).reshape(1, -1)
        if matching is not None:
            # A selective filter: score its few items exactly (a search would have to
            # fetch most of the index to find them; 0.5 s at 1e5 items before this).
            scored = index.score(query[0], [i for i in matching if i not in excluded])
            scored.sort(key=lambda hit: hit[1], reverse=True)
            return [
                RecommendedItem(item_id=iid, score=score, source="model")
                for iid, score in scored[:n]
            ]
        # Start with n (+ exclusions the index filters itself); a category filter may
        # need more, so widen 4x until enough match or the whole index was searched.
        k = min(size, n if prefix is None else 4 * n)
        while True:
            hits = index.search(query, k, exclude=[excluded])[0]
            out = [
                RecommendedItem(item_id=iid, score=float(score), source="model")
                for iid, score in hits
                if iid not in excluded
                and (prefix is None or category_matches(state.categories_of(iid), prefix))
            ]
            if len(out) >= n or k >= size:
                return out[:n]
            k = min(size, 4 * k)

    def similar(self, item_id: str, n: int | None = None) -> SimilarResponse:
        """Nearest items to ``item_id`` by item vector, within its domain."""
        state = self.require_state()
        n = self.check_n(n)
        if state.item_domain(item_id) is None:
            self.feed.catch_up()
        domain = state.item_domain(item_id)
        if domain is None:
            raise NotFound(f"item {item_id!r} not found")
        index = state.indexes[domain]
        vector = index.vector(item_id)
        if vector is None:
            raise NotFound(f"item {item_id!r} is not in the {domain!r} index")
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
