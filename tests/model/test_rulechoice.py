"""The rule for users new to a domain: the trained map unless another is clearly better."""

from __future__ import annotations

import numpy as np

from model.rulechoice import PREFERRED_RULE, choose_rule


def _per_user(values: dict[str, np.ndarray]):  # type: ignore[no-untyped-def]
    return lambda rule: values[rule]


def test_a_lead_within_one_standard_error_keeps_the_trained_map() -> None:
    rng = np.random.default_rng(0)
    bridge = rng.random(400)
    other = bridge + rng.normal(0.002, 0.05, 400)  # a tiny mean gain, a wide spread
    score = {"content+aligned": float(other.mean()), PREFERRED_RULE: float(bridge.mean())}
    assert score["content+aligned"] > score[PREFERRED_RULE]
    values = {"content+aligned": other, PREFERRED_RULE: bridge}
    rule, why = choose_rule(score, _per_user(values))
    assert rule == PREFERRED_RULE
    assert why["leader"] == "content+aligned" and 0 < why["paired_gain"] <= why["se"]
    # without the rule the higher mean wins, however small the lead
    assert choose_rule(score, _per_user(values), one_se=False)[0] == "content+aligned"


def test_a_clear_lead_beyond_one_standard_error_wins() -> None:
    rng = np.random.default_rng(1)
    bridge = rng.random(400)
    other = bridge + rng.normal(0.05, 0.05, 400)
    values = {"content+aligned": other, PREFERRED_RULE: bridge}
    score = {r: float(v.mean()) for r, v in values.items()}
    rule, why = choose_rule(score, _per_user(values))
    assert rule == "content+aligned" and why["paired_gain"] > why["se"]


def test_the_map_leading_or_absent_needs_no_test() -> None:
    called: list[str] = []

    def per_user(rule: str) -> np.ndarray:
        called.append(rule)
        return np.zeros(3)

    assert choose_rule({"content": 0.1, PREFERRED_RULE: 0.2}, per_user)[0] == PREFERRED_RULE
    assert choose_rule({"content": 0.1}, per_user) == ("content", {"by": "highest score"})
    assert called == []
    # one pseudo-cold user cannot show a lead beyond noise: the map serves
    one = {"content": np.array([1.0]), PREFERRED_RULE: np.array([0.0])}
    assert choose_rule({"content": 1.0, PREFERRED_RULE: 0.0}, _per_user(one))[0] == PREFERRED_RULE
