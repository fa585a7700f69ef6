"""What the stores keep about served recommendations and the feedback on them: the record
of a served list, the feedback state kept with it, the counters of the online metrics,
and the one function that turns feedback events into counter increments (pure: the
SQLite, Redis and test stores all apply it inside their own atomic step).

Definitions (docs/service.md "Feedback and online metrics" says the same for clients):

* a *pair* is (recommendation, rank): one item of one served list;
* an *impression* is a pair with an ``impression`` event or a positive event (a click
  implies the item was seen), counted once per pair;
* a *click* is a pair with at least one positive event (click, add-to-cart, purchase by
  default), counted once per pair; so clicks <= impressions;
* a recommendation is *observed* once it has any event, and a *hit* once it has a
  positive one; its reciprocal rank is 1 / the best (lowest) rank with a positive event,
  0 when none; ``rr_sum`` and ``rr_sq_sum`` add it and its square up over the observed
  recommendations (the MRR's mean and variance);
* events of one type on one pair count once: a re-sent event (a retry) changes nothing.

Counters are named (``recommendations``, ``observed``, ``impressions``, ``clicks``,
``hits``, ``rr_sum``, ``rr_sq_sum``, ``event:<type>``), kept per (version, domain) and per
(version, domain, hour of the recommendation), so every replica adds to the same ones.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

HOUR_S = 3600
HOURS_KEPT = 14 * 24
"""How long the per-hour counters are kept (the console's chart): two weeks."""

EVENT_PREFIX = "event:"
IMPRESSION = "impression"


def hour_of(t: float) -> int:
    """The hour bucket (unix seconds at the start of the hour) of time ``t``."""
    return int(t // HOUR_S) * HOUR_S


@dataclass(frozen=True)
class RecommendationRecord:
    """One served list: who it was for (a user id, an anonymous session id, or neither),
    the domain, the items in rank order with their source, the model version that served
    it, when, and the catalogue size of the domain then (for coverage)."""

    recommendation_id: str
    user_id: str | None
    session_id: str | None
    domain: str
    version: str
    created_at: float
    items: tuple[tuple[str, str], ...]
    """(item id, source), rank 1 first."""
    catalogue_size: int = 0

    def rank_of(self, item_id: str) -> int | None:
        """1-based rank of ``item_id`` in the list; None when it was not served."""
        for k, (iid, _) in enumerate(self.items):
            if iid == item_id:
                return k + 1
        return None

    def encode(self) -> bytes:
        return json.dumps(
            [
                self.user_id,
                self.session_id,
                self.domain,
                self.version,
                self.created_at,
                [list(i) for i in self.items],
                self.catalogue_size,
            ],
            separators=(",", ":"),
        ).encode()

    @classmethod
    def decode(cls, recommendation_id: str, data: bytes | str) -> RecommendationRecord:
        user, session, domain, version, created, items, size = json.loads(data)
        return cls(
            recommendation_id,
            user,
            session,
            domain,
            version,
            float(created),
            tuple((str(i), str(s)) for i, s in items),
            int(size),
        )


@dataclass
class FeedbackState:
    """The feedback a recommendation has had: the (rank, event) pairs seen (``"3:click"``;
    ``"3:~imp"`` / ``"3:~pos"`` mark a pair counted as impression / click), the best rank
    with a positive event (0: none), observed, hit."""

    seen: set[str] = field(default_factory=set)
    best_rank: int = 0

    @property
    def observed(self) -> bool:
        return bool(self.seen)

    @property
    def hit(self) -> bool:
        return self.best_rank > 0

    def encode(self) -> bytes:
        return json.dumps([sorted(self.seen), self.best_rank], separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes | str | None) -> FeedbackState:
        if not data:
            return cls()
        seen, best = json.loads(data)
        return cls(set(seen), int(best))

    def events(self) -> list[tuple[int, str]]:
        """(rank, event type) of every event seen, by rank."""
        out = []
        for s in self.seen:
            rank, _, event = s.partition(":")
            if not event.startswith("~"):
                out.append((int(rank), event))
        return sorted(out)


@dataclass(frozen=True)
class StoredRecommendation:
    record: RecommendationRecord
    feedback: FeedbackState


def apply_feedback(
    record: RecommendationRecord,
    state: FeedbackState,
    events: Sequence[tuple[str, str]],
    positive: Collection[str],
) -> tuple[dict[str, float], list[int]]:
    """Add ``events`` ((item id, event type); every item must be in ``record``) to
    ``state`` in place. Returns the counter increments (module docstring) and the indexes
    of the events that were new (the others were seen before: a retry)."""
    delta: Counter[str] = Counter()
    rr: dict[str, float] = {}
    new: list[int] = []
    was_observed = state.observed
    best_before = state.best_rank
    for k, (item_id, event) in enumerate(events):
        rank = record.rank_of(item_id)
        if rank is None:
            raise ValueError(
                f"item {item_id!r} is not in recommendation {record.recommendation_id}"
            )
        key = f"{rank}:{event}"
        if key in state.seen:
            continue
        state.seen.add(key)
        new.append(k)
        delta[EVENT_PREFIX + event] += 1
        is_positive = event in positive
        if (event == IMPRESSION or is_positive) and f"{rank}:~imp" not in state.seen:
            state.seen.add(f"{rank}:~imp")
            delta["impressions"] += 1
        if is_positive:
            if f"{rank}:~pos" not in state.seen:
                state.seen.add(f"{rank}:~pos")
                delta["clicks"] += 1
            if state.best_rank == 0 or rank < state.best_rank:
                state.best_rank = rank
    if state.observed and not was_observed:
        delta["observed"] += 1
    if state.best_rank != best_before:
        if best_before == 0:
            delta["hits"] += 1
        old = 1.0 / best_before if best_before else 0.0
        now = 1.0 / state.best_rank
        rr["rr_sum"] = now - old
        rr["rr_sq_sum"] = now * now - old * old
    out: dict[str, float] = {name: float(n) for name, n in delta.items()}
    out.update(rr)
    return out, new


@dataclass(frozen=True)
class OnlineCounts:
    """The raw online counters of one (bundle version, domain) (module docstring):
    ``events`` counts each event type once per pair; ``items_shown`` is the number of
    distinct items served; ``catalogue_size`` the domain's size when last served."""

    version: str
    domain: str
    recommendations: int = 0
    observed: int = 0
    impressions: int = 0
    clicks: int = 0
    hits: int = 0
    rr_sum: float = 0.0
    rr_sq_sum: float = 0.0
    events: dict[str, int] = field(default_factory=dict)
    items_shown: int = 0
    catalogue_size: int = 0

    @classmethod
    def of(
        cls,
        version: str,
        domain: str,
        values: Mapping[str, float],
        items_shown: int = 0,
        catalogue_size: int = 0,
    ) -> OnlineCounts:
        """From named counter values (what the stores keep)."""
        events = {
            name[len(EVENT_PREFIX) :]: int(v)
            for name, v in values.items()
            if name.startswith(EVENT_PREFIX)
        }

        def n(name: str) -> int:
            return int(values.get(name, 0))

        return cls(
            version,
            domain,
            recommendations=n("recommendations"),
            observed=n("observed"),
            impressions=n("impressions"),
            clicks=n("clicks"),
            hits=n("hits"),
            rr_sum=float(values.get("rr_sum", 0.0)),
            rr_sq_sum=float(values.get("rr_sq_sum", 0.0)),
            events=events,
            items_shown=items_shown,
            catalogue_size=catalogue_size,
        )


@dataclass(frozen=True)
class HourCounts:
    """The counters of the recommendations served in one hour (``hour``: unix seconds)."""

    hour: int
    counts: OnlineCounts


def recorded_counts(records: Sequence[RecommendationRecord]) -> dict[tuple[str, str, int], int]:
    """(version, domain, hour) -> recommendations served: what recording adds."""
    out: Counter[tuple[str, str, int]] = Counter()
    for r in records:
        out[(r.version, r.domain, hour_of(r.created_at))] += 1
    return dict(out)
