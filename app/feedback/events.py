"""Feedback on served recommendations (no HTTP; app/http/routers/feedback.py calls this
through ``FeedbackDep``) and the online metrics read back from the store.

``POST /v1/feedback`` takes a batch of events, each (recommendation_id, item_id, event
type, time). The whole batch is checked before anything is written, and refused with the
row it concerns: an unknown or expired recommendation_id is a 404 (records live
``recommendation_ttl_s``; one dropped at recording reads the same), an item that was not
in that recommendation or an unknown event type a 422, a time out of range a 422 (the
rule of POST /v1/interactions, app/api/timestamps.py).

Then, per recommendation, the events are added to its record and to the online counters
in one atomic store step that counts each (item, event type) once, so a re-sent event
changes nothing (and the ``Idempotency-Key`` replays the answer as for other writes). A
named user's positive events not counted before become interactions (their history and
the item's popularity: what retraining learns from), through the same path as POST
/v1/interactions, before the counters are written: a failure between the two may store
such an interaction twice on a retry (at least once), never lose it. An anonymous
session's events count in the metrics only: there is no user history to write.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from app.api.errors import InvalidInput, NotFound, PayloadTooLarge
from app.api.schemas import InteractionIn, InteractionsResponse
from app.api.schemas_feedback import (
    FeedbackEventIn,
    FeedbackResponse,
    FeedbackSeen,
    HourPoint,
    OnlineMetricsOut,
    RecommendationOut,
    ServedItem,
)
from app.api.timestamps import in_range
from app.api.validation import shown
from app.feedback.metrics import OnlineMetrics, summarise
from app.runtime.store_health import StoreHealth
from app.runtime.telemetry import Metrics
from app.settings import Settings
from app.store.base import Store, StoreUnavailable
from app.store.online import OnlineCounts, StoredRecommendation

CHART_HOURS = 7 * 24
"""How far back the per-hour series of GET /v1/stats goes."""


class InteractionSink(Protocol):
    """Where positive events go (``app.users.interactions.Interactions``)."""

    def add(self, rows: Sequence[InteractionIn], *, source: str = "") -> InteractionsResponse: ...


@dataclass(frozen=True)
class CheckedFeedback:
    """A batch that passed every check: its records, and its events per recommendation."""

    records: dict[str, StoredRecommendation]
    events: dict[str, list[FeedbackEventIn]]

    @property
    def users(self) -> set[str]:
        """The users the batch concerns (its idempotency record is filed under them)."""
        return {r.record.user_id for r in self.records.values() if r.record.user_id is not None}


class Feedback:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        health: StoreHealth,
        metrics: Metrics,
        interactions: InteractionSink,
    ) -> None:
        self.settings = settings
        self.store = store
        self.health = health
        self.metrics = metrics
        self.interactions = interactions
        self.types = tuple(settings.feedback_events)
        self.positive = frozenset(settings.feedback_positive)

    # --- POST /v1/feedback --------------------------------------------------------------
    def check(self, events: Sequence[FeedbackEventIn]) -> CheckedFeedback:
        """Every check of the batch (module docstring); reads the records it names."""
        s = self.settings
        if len(events) > s.max_batch:
            raise PayloadTooLarge(
                f"batch has {len(events)} events; the limit is max_batch={s.max_batch}"
            )
        latest = time.time() + s.max_timestamp_skew_s
        by_rec: dict[str, list[FeedbackEventIn]] = {}
        for k, ev in enumerate(events):
            if ev.event not in self.types:
                raise InvalidInput(
                    f"events[{k}].event {shown(ev.event)} is not a feedback event type; "
                    f"allowed: {', '.join(self.types)}"
                )
            if ev.timestamp is not None and not in_range(ev.timestamp, latest):
                raise InvalidInput(
                    f"events[{k}].timestamp is out of range: unix seconds from 0 to "
                    f"{latest:.0f} (the server's clock plus max_timestamp_skew_s="
                    f"{s.max_timestamp_skew_s:g})"
                )
            by_rec.setdefault(ev.recommendation_id, []).append(ev)
        records: dict[str, StoredRecommendation] = {}
        for k, ev in enumerate(events):
            rec_id = ev.recommendation_id
            if rec_id not in records:
                found = self._read(rec_id, "feedback")
                if found is None:
                    raise NotFound(
                        f"events[{k}].recommendation_id {shown(rec_id)} is unknown or expired "
                        f"(served lists are kept recommendation_ttl_s="
                        f"{s.recommendation_ttl_s:g} s)"
                    )
                records[rec_id] = found
            if records[rec_id].record.rank_of(ev.item_id) is None:
                raise InvalidInput(
                    f"events[{k}].item_id {shown(ev.item_id)} was not in recommendation "
                    f"{shown(rec_id)}"
                )
        return CheckedFeedback(records, by_rec)

    def apply(self, checked: CheckedFeedback, *, source: str = "") -> FeedbackResponse:
        """Write a checked batch: interactions of new positive events, then the counters."""
        stored = self._interactions(checked, source)
        accepted = duplicates = 0
        for rec_id, events in checked.events.items():
            record = checked.records[rec_id].record
            pairs = [(ev.item_id, ev.event) for ev in events]
            try:
                new = self.store.add_feedback(rec_id, pairs, self.positive)
            except StoreUnavailable as err:
                raise self.health.unavailable("feedback", err) from None
            if new is None:
                # expired since the check: nothing of it is counted
                raise NotFound(f"recommendation_id {shown(rec_id)} expired meanwhile")
            accepted += len(new)
            duplicates += len(pairs) - len(new)
            for k in new:
                self.metrics.feedback_events.labels(
                    record.version, record.domain, pairs[k][1]
                ).inc()
        self.health.ok()
        return FeedbackResponse(accepted=accepted, duplicates=duplicates, interactions=stored)

    def _interactions(self, checked: CheckedFeedback, source: str) -> int:
        rows: list[InteractionIn] = []
        for rec_id, events in checked.events.items():
            found = checked.records[rec_id]
            user = found.record.user_id
            if user is None:
                continue
            seen = {f"{r}:{e}" for r, e in found.feedback.events()}
            for ev in events:
                key = f"{found.record.rank_of(ev.item_id)}:{ev.event}"
                if ev.event in self.positive and key not in seen:
                    seen.add(key)
                    rows.append(
                        InteractionIn(
                            user_id=user,
                            item_id=ev.item_id,
                            domain=found.record.domain,
                            timestamp=ev.timestamp,
                        )
                    )
        if not rows:
            return 0
        return self.interactions.add(rows, source=source).accepted

    # --- reads --------------------------------------------------------------------------
    def _read(self, rec_id: str, operation: str) -> StoredRecommendation | None:
        try:
            found = self.store.get_recommendation(rec_id)
        except StoreUnavailable as err:
            raise self.health.unavailable(operation, err, attempted=False) from None
        self.health.ok()
        return found

    def recommendation(self, rec_id: str) -> RecommendationOut:
        """GET /v1/recommendations/{id}: the served list and the events counted on it."""
        found = self._read(rec_id, "read recommendation")
        if found is None:
            raise NotFound(f"recommendation {shown(rec_id)} is unknown or expired")
        r = found.record
        return RecommendationOut(
            recommendation_id=r.recommendation_id,
            user_id=r.user_id,
            session_id=r.session_id,
            domain=r.domain,
            model_version=r.version,
            created_at=r.created_at,
            items=[
                ServedItem(rank=k + 1, item_id=i, source=src) for k, (i, src) in enumerate(r.items)
            ],
            feedback=[FeedbackSeen(rank=k, event=e) for k, e in found.feedback.events()],
        )

    def metrics_of(self, version: str, domain: str) -> OnlineMetrics:
        """The online metrics of one version in one domain (the canary's and the
        trainer's question); raises StoreUnavailable."""
        return summarise(self.store.online_counts(version, domain), self.positive)

    def online(self, *, hourly: bool = True) -> list[OnlineMetricsOut]:
        """Every (version, domain) with counters, newest-looking version names last;
        raises StoreUnavailable."""
        out = []
        since = time.time() - CHART_HOURS * 3600
        for version, domain in self.store.online_versions():
            m = self.metrics_of(version, domain)
            hours = self.store.online_hourly(version, domain, since) if hourly else []
            out.append(as_out(m, [point(h.hour, h.counts) for h in hours]))
        return out


def point(hour: int, c: OnlineCounts) -> HourPoint:
    return HourPoint(
        hour=hour,
        recommendations=c.recommendations,
        impressions=c.impressions,
        clicks=c.clicks,
        hits=c.hits,
        observed=c.observed,
        ctr=c.clicks / c.impressions if c.impressions else 0.0,
    )


def as_out(m: OnlineMetrics, hourly: list[HourPoint]) -> OnlineMetricsOut:
    return OnlineMetricsOut(
        model_version=m.version,
        domain=m.domain,
        recommendations=m.recommendations,
        observed=m.observed,
        impressions=m.impressions,
        clicks=m.clicks,
        hits=m.hits,
        positives=m.positives,
        events=m.events,
        ctr=m.ctr,
        ctr_ci=m.ctr_ci,
        hit_rate=m.hit_rate,
        hit_rate_ci=m.hit_rate_ci,
        mrr=m.mrr,
        mrr_ci=m.mrr_ci,
        coverage=m.coverage,
        items_shown=m.items_shown,
        catalogue_size=m.catalogue_size,
        hourly=hourly,
    )
