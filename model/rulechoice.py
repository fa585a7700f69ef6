"""Which rule serves users new to a domain: the trained cross-domain map unless another
rule is clearly better on validation.

The blend fit (model.blendfit) fits the cross-domain weights once per candidate rule (the
model's configured rule and ``bridge``, the trained map of model.nn.bridge) and scores
each on the pseudo-cold validation users. Picking the higher mean lets a difference far
inside the noise of a few hundred users decide how every such user is served, and the
two rules fail differently: the map is trained for this task, the configured rule is a
fixed sum. So the map serves unless the other rule's paired per-user gain exceeds one
standard error (the one-standard-error rule, as ``model.blendfit`` already applies to the
weights of one slice).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from model.copurchasefit import chosen_pop, evaluate_pseudo_cold
from model.data.split import InductiveSplit
from model.evaluation import PSEUDO_COLD_SLICE
from model.nn.blend import Blend, BlendWeights

PREFERRED_RULE = "bridge"
"""The rule kept unless another is better by more than one standard error."""


def pseudo_cold_per_user(
    blend: Blend,
    split: InductiveSplit,
    ranker: Any,
    cross: Mapping[str, tuple[BlendWeights, Mapping[str, Any]]],
) -> np.ndarray:
    """Validation NDCG@20 of every pseudo-cold user of the domains in ``cross`` (sorted
    domains, each slice's own user order), served with one rule's fitted cross-domain
    weights and co-purchase exponent (``ranker`` is that rule's): [n_users]."""
    saved_pop = dict(blend.copurchase.pop) if blend.copurchase is not None else None
    if blend.copurchase is not None:
        blend.copurchase.pop = {**blend.copurchase.pop, **chosen_pop(cross)}
    per_user: dict[tuple[str, str], dict[str, np.ndarray]] = {}
    try:
        weights = {d: w for d, (w, _) in cross.items()}
        evaluate_pseudo_cold(
            blend, split, ranker, weights, domains=sorted(cross), per_user=per_user
        )
    finally:
        if blend.copurchase is not None and saved_pop is not None:
            blend.copurchase.pop = saved_pop
    parts = [per_user[(d, PSEUDO_COLD_SLICE)]["ndcg@20"] for d in sorted(cross)]
    parts = [p for p in parts if len(p)]
    return np.concatenate(parts) if parts else np.zeros(0)


def choose_rule(
    score: Mapping[str, float],
    per_user: Callable[[str], np.ndarray],
    *,
    one_se: bool = True,
) -> tuple[str, dict[str, Any]]:
    """The rule that serves users new to a domain, and why.

    ``score``: each rule's mean pseudo-cold validation NDCG@20; ``per_user(rule)``: the
    per-user values behind it, the same users in the same order for every rule. Without
    ``one_se`` (or without the preferred rule) the highest score wins; with it the
    preferred rule wins unless the leader's mean paired gain over it exceeds its standard
    error. The record says which and by how much.
    """
    best = max(score, key=lambda r: score[r])
    if not one_se or best == PREFERRED_RULE or PREFERRED_RULE not in score:
        return best, {"by": "highest score"}
    diff = per_user(best) - per_user(PREFERRED_RULE)
    n = len(diff)
    se = float(diff.std(ddof=1) / math.sqrt(n)) if n >= 2 else math.inf
    gain = float(diff.mean()) if n else 0.0
    record = {"by": "one standard error", "leader": best, "paired_gain": gain, "se": se}
    return (best if gain > se else PREFERRED_RULE), record
