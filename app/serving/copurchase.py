"""The co-purchase re-ranking stage: the index's answer for a user with items in another
domain, re-ranked with their co-purchase boost (model.nn.copurchase; ``UserEmbedding.boost``).

The served score is ``<u, v_i> + boost_i`` with ``boost_i >= 0`` for the few items the
boost lists and 0 for every other item. So an item outside the list that belongs to the
true top n is also in the index's top n (only boosted items can overtake it), and the
exact top n is the best n of: the index's top n under the same exclusions and filter, and
the boosted items that pass them, scored exactly (``ItemIndex.score``). The offline
evaluation adds the same boost to its full score matrix (model.rankers), so the two agree.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from app.index.protocol import ItemIndex
from model.serving_types import ItemBoost


def rerank(
    index: ItemIndex,
    vector: np.ndarray,
    hits: Sequence[tuple[str, float]],
    boost: ItemBoost,
    n: int,
    keep: Callable[[str], bool],
) -> list[tuple[str, float]]:
    """The top ``n`` (id, served score) of ``hits`` (the index's top n, best first, for
    ``vector`` under the request's exclusions and filter) and the boosted items that
    ``keep`` accepts (items no longer in the index are left out)."""
    added = dict(zip(boost.item_ids, boost.scores.tolist(), strict=True))
    combined = {iid: score + added.get(iid, 0.0) for iid, score in hits}
    candidates = [iid for iid in boost.item_ids if iid not in combined and keep(iid)]
    for iid, score in index.score(vector, candidates):
        combined[iid] = score + added[iid]
    # ties: the index's order first, then the boost's (a stable sort of that order)
    return sorted(combined.items(), key=lambda hit: -hit[1])[:n]
