"""Fallback strategies: what fills a recommendation the model cannot (fully) serve.

A strategy maps a :class:`FallbackQuery` to candidate (item id, score) pairs, best first.
:data:`STRATEGIES` is the registry; ``fallback_chain`` (settings) names strategies from
it, tried in order, and settings refuse any other name (``app.settings_groups.FallbackName``). To
add a strategy: write the function, register it, and add its name to ``FallbackName`` and
to ``app.api.schemas.Source`` (the ``source`` an item it contributes carries).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from app.api.schemas import RecommendedItem
from app.lifecycle.categories import category_matches
from app.lifecycle.popularity import PopularityBook
from app.lifecycle.state import ModelState
from app.settings_groups import FallbackName


@dataclass(frozen=True)
class FallbackQuery:
    state: ModelState
    domain: str
    popularity: PopularityBook
    matching: list[str] | None
    """The category filter's items when it is selective (``category_candidates``)."""


Strategy = Callable[[FallbackQuery], Iterable[tuple[str, float]]]


def popular(q: FallbackQuery) -> Iterable[tuple[str, float]]:
    """Bundle training popularity + API interactions, most popular first."""
    if q.matching is None:
        ids, scores = q.popularity.ranking(q.state, q.domain)
        # lazily: a fallback reads the first few of a ranking that may hold every item
        return ((ids[k], float(scores[k])) for k in range(len(ids)))
    # A selective filter: rank its few items instead of scanning the whole ranking.
    pops = [(i, q.popularity.score(q.state, q.domain, i)) for i in q.matching]
    return sorted((h for h in pops if h[1] > 0), key=lambda h: -h[1])


def latest(q: FallbackQuery) -> Iterable[tuple[str, float]]:
    """Registered items, newest first (score = created_at)."""
    return q.state.registered.latest(q.domain)


STRATEGIES: dict[FallbackName, Strategy] = {"popular": popular, "latest": latest}


def fill(
    chain: Sequence[FallbackName],
    q: FallbackQuery,
    n: int,
    taken: set[str],
    prefix: str | None,
) -> list[RecommendedItem]:
    """Up to ``n`` items from the strategies of ``chain``, in order: items of the domain's
    index, not in ``taken`` (which gains what is picked), matching ``prefix`` if set."""
    out: list[RecommendedItem] = []
    state = q.state
    index = state.indexes[q.domain]

    def usable(iid: str) -> bool:
        return (
            iid not in taken
            and iid in index
            and (prefix is None or category_matches(state.categories_of(iid), prefix))
        )

    for name in chain:
        if len(out) >= n:
            break
        for iid, score in STRATEGIES[name](q):
            if usable(iid):
                out.append(RecommendedItem(item_id=iid, score=score, source=name))
                taken.add(iid)
                if len(out) >= n:
                    break
    return out
