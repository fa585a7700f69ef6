"""Online metrics of one (bundle version, domain) from its raw counters: pure arithmetic,
no store, so a decision rule (canary promotion) can be tested on made-up counts.

Definitions (what is counted: app/store/online.py; docs/service.md says the same):

* ``ctr`` = clicks / impressions over (recommendation, rank) pairs: CTR@k where k is the
  length of each served list; a pair with a positive event counts as clicked and as seen;
* ``hit_rate`` = observed recommendations with at least one positive event / observed
  recommendations (those with any event: a list no client reported on tells nothing);
* ``mrr`` = mean over observed recommendations of 1 / the best rank with a positive event
  (0 when none);
* ``coverage`` = distinct items shown / the domain's catalogue size when last served.

Intervals are 95 %: Wilson score intervals for the proportions (ctr, hit rate); for the
MRR a normal approximation from the sum and the sum of squares of the reciprocal ranks
(mean +- 1.96 standard errors, sample variance, clipped to [0, 1]). With no observations
the value is 0 and the interval (0, 1): the counts say how much each rests on.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass, field

from app.store.online import OnlineCounts

Z95 = 1.959963984540054
"""The standard normal's 97.5 % quantile."""

Interval = tuple[float, float]
UNKNOWN: Interval = (0.0, 1.0)


def wilson(successes: int, trials: int, z: float = Z95) -> Interval:
    """The Wilson score interval of ``successes`` / ``trials``; (0, 1) with no trials."""
    if trials <= 0:
        return UNKNOWN
    p = successes / trials
    z2 = z * z
    denom = 1 + z2 / trials
    centre = (p + z2 / (2 * trials)) / denom
    half = z * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def mean_interval(total: float, total_sq: float, n: int, z: float = Z95) -> Interval:
    """Normal-approximation interval of a mean in [0, 1] from the sum and the sum of
    squares of ``n`` values; (0, 1) with fewer than 2."""
    if n < 2:
        return UNKNOWN
    mean = total / n
    variance = max(0.0, (total_sq - n * mean * mean) / (n - 1))
    half = z * math.sqrt(variance / n)
    return max(0.0, mean - half), min(1.0, mean + half)


@dataclass(frozen=True)
class OnlineMetrics:
    """The online metrics of one (version, domain), with their counts (module docstring)."""

    version: str
    domain: str
    recommendations: int
    observed: int
    impressions: int
    clicks: int
    hits: int
    positives: dict[str, int]
    """Events of each positive type (each counted once per pair)."""
    ctr: float
    ctr_ci: Interval
    hit_rate: float
    hit_rate_ci: Interval
    mrr: float
    mrr_ci: Interval
    coverage: float
    items_shown: int = 0
    catalogue_size: int = 0
    events: dict[str, int] = field(default_factory=dict)
    """Events of every type (each counted once per pair)."""


def summarise(
    counts: OnlineCounts,
    positive: Collection[str] = ("click", "add-to-cart", "purchase"),
) -> OnlineMetrics:
    """The metrics of ``counts`` (``positive``: which event types ``positives`` lists)."""
    c = counts
    return OnlineMetrics(
        version=c.version,
        domain=c.domain,
        recommendations=c.recommendations,
        observed=c.observed,
        impressions=c.impressions,
        clicks=c.clicks,
        hits=c.hits,
        positives={e: n for e, n in sorted(c.events.items()) if e in positive},
        ctr=c.clicks / c.impressions if c.impressions else 0.0,
        ctr_ci=wilson(c.clicks, c.impressions),
        hit_rate=c.hits / c.observed if c.observed else 0.0,
        hit_rate_ci=wilson(c.hits, c.observed),
        mrr=c.rr_sum / c.observed if c.observed else 0.0,
        mrr_ci=mean_interval(c.rr_sum, c.rr_sq_sum, c.observed),
        coverage=min(1.0, c.items_shown / c.catalogue_size) if c.catalogue_size else 0.0,
        items_shown=c.items_shown,
        catalogue_size=c.catalogue_size,
        events=dict(sorted(c.events.items())),
    )
