"""The model work of recommends: one request, or every request waiting together.

No store access and no HTTP: the caller (app/serving/recommend.py) has checked the request and read
the user's stored history. This runs inline on the event loop or on the worker's model
thread (app/serving/model_thread.py), which hands it all the requests waiting when it wakes. Those
are then embedded with one batched fold-in per domain and ranked with one multi-query index
search; the rest of each answer is finished one request at a time. A request that fails
gets its own error; the others of its batch are answered.

The steps of one request:

1. collect the history (bundle + stored + inline ids);
2. answer from the user's top-N list when the request allows it (app/serving/topn.py);
3. embed the user (fold-in; batched);
4. on a top-N miss, compute the user's list and answer from it;
5. rank with the domain index (batched; one request at a time with a category filter),
   then re-rank with the user's co-purchase boost, if any
   (app/serving/copurchase.py);
6. fill what the model could not with the fallback chain (app/serving/fallbacks.py).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TypeVar, cast

import numpy as np

from app.api.schemas import (
    HistoryReport,
    RecommendedItem,
    RecommendResponse,
    Source,
    StoredHistory,
    UserEmbeddingMethod,
)
from app.lifecycle.categories import category_matches
from app.lifecycle.engine import embedding_method
from app.lifecycle.popularity import PopularityBook
from app.lifecycle.state import ModelState
from app.runtime.telemetry import Metrics
from app.serving import fallbacks
from app.serving.copurchase import rerank
from app.serving.topn import Entry, TopNCache, compute_entry, history_fingerprint
from app.settings import Settings
from model.serving_types import UserEmbedding

log = logging.getLogger("micrec.service")

T = TypeVar("T")


@dataclass(frozen=True)
class Query:
    """A recommend request (``app.api.schemas.RecommendRequest``), checked against the settings
    and the state's domains, with its defaults filled in (app/serving/recommend.py builds it)."""

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


@dataclass(frozen=True)
class Job:
    """One request's model work: the state it is answered from, the query, the user read."""

    state: ModelState
    query: Query
    user: UserLookup
    embedding: UserEmbedding | None = None
    """Set for a query-started visitor (method "query"): no history to fold in."""


Outcome = RecommendResponse | Exception


class _Outcomes:
    """The answers of a batch as they are decided; a step that raises decides its own
    request's outcome (the error) and no other."""

    def __init__(self, size: int) -> None:
        self.out: list[Outcome | None] = [None] * size

    def open(self, k: int) -> bool:
        return self.out[k] is None

    def run(self, k: int, step: Callable[[], T]) -> T | None:
        try:
            return step()
        except Exception as err:  # this request's error; the batch goes on
            self.out[k] = err
            return None

    def done(self) -> list[Outcome]:
        assert all(o is not None for o in self.out)
        return cast(list[Outcome], self.out)


def collect_history(
    state: ModelState,
    user_id: str | None,
    inline: Sequence[str],
    user: UserLookup,
    warnings: list[str],
) -> tuple[dict[str, list[str]], HistoryReport]:
    """domain -> item ids: bundle history of ``user_id`` + stored history (``user``) +
    ``inline`` ids."""
    by_domain: dict[str, list[str]] = {}
    known = False
    if user_id is not None:
        if not user.erased:
            for d, ids in state.engine.bundle_history(user_id).items():
                by_domain[d] = list(ids)
        for d, ids in user.history.items():
            if d in by_domain:
                by_domain[d].extend(ids)
            else:
                by_domain[d] = list(ids)
        known = bool(by_domain)
    unknown: list[str] = []
    for iid in inline:
        item_domain = state.item_domain(iid)
        if item_domain is None:
            unknown.append(iid)
        else:
            by_domain.setdefault(item_domain, []).append(iid)
    if unknown:
        warnings.append(f"{len(unknown)} history ids are not in the catalogue and were ignored")
    report = HistoryReport(
        stored=user.stored, known_user=known, items_used=0, unknown_ids=unknown[:20]
    )
    return by_domain, report


@dataclass
class _Work:
    """One request between the steps."""

    state: ModelState
    q: Query
    by_domain: dict[str, list[str]]
    report: HistoryReport
    warnings: list[str]
    matching: list[str] | None
    """A selective category filter's items (looked up once for the model and fallbacks)."""
    fingerprint: int | None = None
    """Set while the request may still be answered from a top-N list computed for it."""
    embedding: UserEmbedding | None = None
    items: list[RecommendedItem] = field(default_factory=list)

    @property
    def source(self) -> Source:
        """What the ranked items are labelled with: "query" for a query-started visitor."""
        return (
            "query" if self.embedding is not None and self.embedding.method == "query" else "model"
        )

    @property
    def batch_key(self) -> tuple[int, str]:
        return id(self.state), self.q.domain

    @cached_property
    def excluded(self) -> set[str]:
        """Ids never recommended: ``exclude``, and the history with ``exclude_seen``."""
        excluded = set(self.q.exclude)
        if self.q.exclude_seen:
            excluded.update(i for ids in self.by_domain.values() for i in ids)
        return excluded


def _by_batch(work: list[tuple[int, _Work]]) -> list[list[tuple[int, _Work]]]:
    """``work`` grouped by (state, domain): the requests one batched call can serve."""
    groups: dict[tuple[int, str], list[tuple[int, _Work]]] = {}
    for k, w in work:
        groups.setdefault(w.batch_key, []).append((k, w))
    return list(groups.values())


class Answerer:
    """Turns (state, query, user read) into responses; :meth:`answer_many` batches."""

    def __init__(
        self, settings: Settings, metrics: Metrics, popularity: PopularityBook, topn: TopNCache
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.popularity = popularity
        self.topn = topn

    def answer(self, job: Job) -> RecommendResponse:
        out = self.answer_many([job])[0]
        if isinstance(out, Exception):
            raise out
        return out

    def answer_many(self, jobs: Sequence[Job]) -> list[Outcome]:
        """The response (or the error) of each job, in order."""
        outcomes = _Outcomes(len(jobs))
        work: list[tuple[int, _Work]] = []
        for k, job in enumerate(jobs):
            started = outcomes.run(k, lambda: self._start(job))  # noqa: B023
            if isinstance(started, RecommendResponse):
                outcomes.out[k] = started
            elif started is not None:
                work.append((k, started))
        self._embed(work, outcomes)
        live = []
        for k, w in work:
            if outcomes.open(k):
                answered = outcomes.run(k, lambda: self._from_new_entry(w))  # noqa: B023
                if answered is not None:
                    outcomes.out[k] = answered
                elif outcomes.open(k):
                    live.append((k, w))
        self._rank(live, outcomes)
        for k, w in live:
            if outcomes.open(k):
                outcomes.out[k] = outcomes.run(k, lambda: self._finish(w))  # noqa: B023
        return outcomes.done()

    # --- the steps ------------------------------------------------------------------------
    def _start(self, job: Job) -> RecommendResponse | _Work:
        """Steps 1-2: the history, and the answer from the user's top-N list if it has one."""
        state, q, user = job.state, job.query, job.user
        warnings: list[str] = []
        if user.stored == "unavailable":
            warnings.append(
                "history store unavailable: using the bundle's and the inline history only"
            )
        by_domain, report = collect_history(state, q.user_id, q.history, user, warnings)
        matching = None if q.prefix is None else state.category_candidates(q.domain, q.prefix)
        w = _Work(state, q, by_domain, report, warnings, matching, embedding=job.embedding)
        if job.embedding is not None:
            return w  # a query: embedded already, never from the top-N cache
        cacheable = (
            self.topn.enabled
            and user.stored == "ok"
            and not user.erased
            and not q.history
            and q.exclude_seen
            and matching is None
        )
        if cacheable:
            assert q.user_id is not None  # cacheable requests name a user
            fingerprint = history_fingerprint(user.history)
            entry = self.topn.get(state, q.user_id, q.domain, fingerprint)
            if entry is None:
                w.fingerprint = fingerprint  # computed after the embedding (step 4)
            else:
                answer = self._from_entry(w, entry)
                if answer is not None:
                    return answer
                self.metrics.topn_cache.labels(q.domain, "miss").inc()
        return w

    def _embed(self, work: list[tuple[int, _Work]], outcomes: _Outcomes) -> None:
        """Step 3: one batched fold-in per (state, domain); one by one if a batch fails, so
        that only the request at fault gets the error."""
        for group in _by_batch([(k, w) for k, w in work if w.embedding is None]):
            engine, domain = group[0][1].state.engine, group[0][1].q.domain
            try:
                embeddings = engine.embed_users(domain, [w.by_domain for _, w in group])
            except Exception:
                log.warning("batched fold-in failed; embedding one at a time", exc_info=True)
                for k, w in group:
                    w.embedding = outcomes.run(k, lambda: engine.embed_user(domain, w.by_domain))  # noqa: B023
                continue
            for (_, w), embedding in zip(group, embeddings, strict=True):
                w.embedding = embedding

    def _from_new_entry(self, w: _Work) -> RecommendResponse | None:
        """Step 4: a top-N miss computes the user's list and answers from it."""
        assert w.embedding is not None
        w.report.items_used = w.embedding.n_history
        if w.fingerprint is None:
            return None
        q = w.q
        assert q.user_id is not None
        entry = compute_entry(w.state, q.domain, w.by_domain, w.embedding, w.fingerprint, self.topn)
        if entry is not None:
            self.topn.put(q.user_id, q.domain, entry)
            answer = self._from_entry(w, entry)
            if answer is not None:
                return answer
        self.metrics.topn_cache.labels(q.domain, "miss").inc()
        return None

    def _from_entry(self, w: _Work, entry: Entry) -> RecommendResponse | None:
        """The answer filtered from ``entry``, or None when too few of its items remain."""
        q, state = w.q, w.state
        keep = None
        if q.prefix is not None:
            prefix = q.prefix
            keep = lambda iid: category_matches(state.categories_of(iid), prefix)  # noqa: E731
        picked = entry.pick(q.n, set(q.exclude), keep)
        if picked is None:
            return None
        w.report.items_used = entry.items_used
        items = [RecommendedItem(item_id=i, score=s, source="model") for i, s in picked]
        self.metrics.topn_cache.labels(q.domain, "hit").inc()
        how = cast(UserEmbeddingMethod, entry.method)
        return self._respond(w, how, items, cached=True)

    def _rank(self, live: list[tuple[int, _Work]], outcomes: _Outcomes) -> None:
        """Step 5: one multi-query search per (state, domain) for the requests without a
        category filter; the others (and any short of n items) one at a time."""
        together = []
        for k, w in live:
            assert w.embedding is not None
            if embedding_method(w.embedding) == "none" or not len(w.state.indexes[w.q.domain]):
                continue
            if w.q.prefix is None:
                together.append((k, w))
            else:
                outcomes.run(k, lambda: self._rank_one(w))  # noqa: B023
        for group in _by_batch(together):
            try:
                self._rank_together([w for _, w in group])
            except Exception:
                log.warning("batched search failed; ranking one at a time", exc_info=True)
                for _, w in group:
                    w.items = []
            for k, w in group:
                index = w.state.indexes[w.q.domain]
                if len(w.items) < min(w.q.n, len(index)):
                    outcomes.run(k, lambda: self._rank_one(w))  # noqa: B023
        for k, w in live:
            if outcomes.open(k) and w.embedding is not None and w.embedding.boost is not None:
                outcomes.run(k, lambda: self._boost(w))  # noqa: B023

    @staticmethod
    def _boost(w: _Work) -> None:
        """The co-purchase stage on the model's top n (the same exclusions and filter)."""
        assert w.embedding is not None and w.embedding.boost is not None
        q, state, excluded = w.q, w.state, w.excluded
        prefix = q.prefix

        def keep(iid: str) -> bool:
            return iid not in excluded and (
                prefix is None or category_matches(state.categories_of(iid), prefix)
            )

        vector = np.asarray(w.embedding.vector, dtype=np.float32).reshape(-1)
        hits = [(it.item_id, it.score) for it in w.items]
        ranked = rerank(state.indexes[q.domain], vector, hits, w.embedding.boost, q.n, keep)
        w.items = [RecommendedItem(item_id=i, score=s, source=w.source) for i, s in ranked]

    @staticmethod
    def _rank_together(group: list[_Work]) -> None:
        index = group[0].state.indexes[group[0].q.domain]
        queries = np.stack([np.asarray(w.embedding.vector, np.float32) for w in group])  # type: ignore[union-attr]
        k = min(len(index), max(w.q.n for w in group))
        hits = index.search(queries, k, exclude=[w.excluded for w in group])
        for w, row in zip(group, hits, strict=True):
            w.items = [
                RecommendedItem(item_id=iid, score=float(score), source=w.source)
                for iid, score in row[: w.q.n]
            ]

    @staticmethod
    def _rank_one(w: _Work) -> None:
        """Top n by the model for one request. A selective filter's few items are scored
        exactly; otherwise the search widens 4x until n items match or the whole index was
        searched (a broad filter, or an IVF index whose probed lists held fewer)."""
        assert w.embedding is not None
        index, q, excluded = w.state.indexes[w.q.domain], w.q, w.excluded
        vector = np.asarray(w.embedding.vector, dtype=np.float32).reshape(-1)
        if w.matching is not None:
            # A search would have to fetch most of the index to find them (0.5 s at 1e5
            # items before this).
            scored = index.score(vector, [i for i in w.matching if i not in excluded])
            scored.sort(key=lambda hit: hit[1], reverse=True)
            w.items = [
                RecommendedItem(item_id=iid, score=score, source=w.source)
                for iid, score in scored[: q.n]
            ]
            return
        prefix, size = q.prefix, len(index)
        k = min(size, q.n if prefix is None else 4 * q.n)
        while True:
            hits = index.search(vector.reshape(1, -1), k, exclude=[excluded])[0]
            w.items = [
                RecommendedItem(item_id=iid, score=float(score), source=w.source)
                for iid, score in hits
                if prefix is None or category_matches(w.state.categories_of(iid), prefix)
            ][: q.n]
            if len(w.items) >= q.n or k >= size:
                return
            k = min(size, 4 * k)

    def _finish(self, w: _Work) -> RecommendResponse:
        """Step 6: the fallback chain fills what the model could not; the response."""
        assert w.embedding is not None
        q, items = w.q, w.items
        embedded = embedding_method(w.embedding)
        method: UserEmbeddingMethod = "fallback" if embedded == "none" else embedded
        if len(items) < q.n:
            taken = w.excluded | {it.item_id for it in items}
            before = len(items)
            fq = fallbacks.FallbackQuery(w.state, q.domain, self.popularity, w.matching)
            items += fallbacks.fill(
                self.settings.fallback_chain, fq, q.n - len(items), taken, q.prefix
            )
            if len(items) > before:
                self.metrics.fallbacks.labels(q.domain).inc()
        if not items:
            w.warnings.append("no items matched (empty index, filters or exclusions)")
        return self._respond(w, method, items, cached=False)

    def _respond(
        self, w: _Work, method: UserEmbeddingMethod, items: list[RecommendedItem], *, cached: bool
    ) -> RecommendResponse:
        m, q = self.metrics, w.q
        m.recommendations.labels(q.domain, method).inc()
        for source, count in Counter(it.source for it in items).items():
            m.items_served.labels(q.domain, source).inc(count)
        return RecommendResponse(
            domain=q.domain,
            n=q.n,
            model_version=w.state.model_version,
            user_embedding=method,
            items=items,
            history=w.report,
            warnings=w.warnings,
            cached=cached,
        )
