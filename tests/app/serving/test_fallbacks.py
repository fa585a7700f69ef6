"""Fallback strategies (app/serving/fallbacks.py): the registry, the settings that name them, the chain."""

from __future__ import annotations

from typing import get_args

import pytest

from app.api.schemas import Source
from app.serving.fallbacks import STRATEGIES, FallbackQuery, fill
from app.settings import Settings, SettingsError, load_settings
from app.settings_groups import DEFAULT_CHAIN, FallbackName
from tests.app.conftest import StartService, state_of
from tests.app.fakes import MemoryStore


def test_settings_accept_exactly_the_registered_strategies() -> None:
    assert set(get_args(FallbackName)) == set(STRATEGIES) == set(DEFAULT_CHAIN)
    assert set(STRATEGIES) <= set(get_args(Source))  # each is an item ``source``
    assert Settings(fallback_chain=["latest"]).fallback_chain == ["latest"]


def test_settings_refuse_an_unknown_strategy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MICREC_FALLBACK_CHAIN", "latest,nearest")
    with pytest.raises(SettingsError, match="MICREC_FALLBACK_CHAIN") as err:
        load_settings()
    assert "\n" not in str(err.value)


def test_the_chain_fills_in_order_without_repeats(
    start: StartService, memory_store: MemoryStore
) -> None:
    svc = start(memory_store)
    svc.items.register(item_id="new-1", domain="arts", title="one")
    svc.items.register(item_id="new-2", domain="arts", title="two")
    state = state_of(svc)
    query = FallbackQuery(state, "arts", svc.popularity, matching=None)
    taken = {"arts-0"}
    got = fill(["latest", "popular"], query, 4, taken, prefix=None)
    # Newest registered first, then the most popular bundle items not already taken.
    assert [(i.item_id, i.source) for i in got] == [
        ("new-2", "latest"),
        ("new-1", "latest"),
        ("arts-1", "popular"),
        ("arts-2", "popular"),
    ]
    assert taken == {"arts-0", "new-1", "new-2", "arts-1", "arts-2"}
    # A category prefix keeps only matching items ("arts|group1": rows 1, 4, 7, ...).
    got = fill(["popular"], query, 2, set(), prefix="arts|group1")
    assert [i.item_id for i in got] == ["arts-1", "arts-4"]
