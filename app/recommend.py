"""Recommendations for a user, and items similar to an item (no HTTP; app/routers/recommend.py
and the similar route of app/routers/items.py call these through the service).

The path of a recommend: collect the user's history (bundle + store + inline ids) ->
the engine embeds the user (fold-in) -> the domain index ranks (exact scoring for a
selective category filter) -> the fallback chain (app/fallbacks.py) fills what the model
could not.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from app import fallbacks
from app.content import category_matches
from app.engine import embedding_method
from app.errors import InvalidInput, NotFound, PayloadTooLarge
from app.parts import Resource
from app.schemas import (
    HistoryReport,
    RecommendedItem,
    RecommendResponse,
    SimilarResponse,
    StoredHistory,
    UserEmbeddingMethod,
)
from app.state import ModelState
from app.store.base import StoreUnavailable


class Recommender(Resource):
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
        fewer than ``n`` items, the configured fallback chain fills the list.
        """
        state = self.require_state()
        state.check_domain(domain)
        n = self.check_n(n)
        self._check_list("history", history)
        self._check_list("exclude", exclude)
        warnings: list[str] = []

        by_domain, report = self._collect_history(state, user_id, history, warnings)
        embedding = state.engine.embed_user(domain, by_domain)
        report.items_used = embedding.n_history

        excluded = set(exclude)
        if exclude_seen:
            excluded.update(i for ids in by_domain.values() for i in ids)
        prefix = category.strip().lower() if category else None
        # A selective filter's items, looked up once for the model and the fallback chain.
        matching = None if prefix is None else state.category_candidates(domain, prefix)

        items: list[RecommendedItem] = []
        embedded = embedding_method(embedding)
        method: UserEmbeddingMethod
        if embedded != "none":
            method = embedded
            items = self._model_candidates(
                state, domain, embedding.vector, n, excluded, prefix, matching
            )
        else:
            method = "fallback"
        if len(items) < n:
            taken = excluded | {it.item_id for it in items}
            before = len(items)
            query = fallbacks.FallbackQuery(state, domain, self.popularity, matching)
            chain = self.settings.fallback_chain
            items += fallbacks.fill(chain, query, n - len(items), taken, prefix)
            if len(items) > before:
                self.metrics.fallbacks.labels(domain).inc()
        if not items:
            warnings.append("no items matched (empty index, filters or exclusions)")

        m = self.metrics
        m.recommendations.labels(domain, method).inc()
        for source, count in Counter(it.source for it in items).items():
            m.items_served.labels(domain, source).inc(count)
        return RecommendResponse(
            domain=domain,
            n=n,
            model_version=state.model_version,
            user_embedding=method,
            items=items,
            history=report,
            warnings=warnings,
        )

    def _collect_history(
        self,
        state: ModelState,
        user_id: str | None,
        inline: Sequence[str],
        warnings: list[str],
    ) -> tuple[dict[str, list[str]], HistoryReport]:
        """domain -> item ids: bundle history + stored history + inline history."""
        by_domain: dict[str, list[str]] = {}
        stored: StoredHistory = "not_requested"
        known = False
        if user_id is not None:
            # An erased user's bundle history is never used (app/erasure.py): the store
            # is asked on every read, so an erasure on any replica counts at once.
            try:
                erased = self.store.is_erased(user_id)
                history = self.store.get_history(user_id)
                stored = "ok"
                self.health.ok()
            except StoreUnavailable as err:
                self.health.failed("read history", err)
                erased = user_id in self.erased
                history = {}
                stored = "unavailable"
                warnings.append(
                    "history store unavailable: using the bundle's and the inline history only"
                )
            if erased:
                self.erased.add(user_id)
            else:
                for d, ids in state.engine.bundle_history(user_id).items():
                    by_domain.setdefault(d, []).extend(ids)
            for d, ids in history.items():
                by_domain.setdefault(d, []).extend(ids)
            known = bool(by_domain)
        unknown: list[str] = []
        if any(state.item_domain(iid) is None for iid in inline):
            self.feed.catch_up()
        for iid in inline:
            item_domain = state.item_domain(iid)
            if item_domain is None:
                unknown.append(iid)
            else:
                by_domain.setdefault(item_domain, []).append(iid)
        if unknown:
            warnings.append(f"{len(unknown)} history ids are not in the catalogue and were ignored")
        report = HistoryReport(
            stored=stored,
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
