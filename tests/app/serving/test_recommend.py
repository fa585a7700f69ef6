"""Recommendations without HTTP (app/serving/recommend.py): limits and validation."""

from __future__ import annotations

import pytest

from app.api.errors import InvalidInput
from app.api.schemas import InteractionIn, RecommendRequest
from tests.app.conftest import StartService
from tests.app.fakes import MemoryStore


def test_limits_and_validation(start: StartService, memory_store: MemoryStore) -> None:
    svc = start(memory_store, max_n=5, default_n=5, max_history=3, max_batch=2)
    with pytest.raises(InvalidInput, match="max_n=5"):
        svc.recommender.recommend(RecommendRequest(domain="arts", n=6))
    with pytest.raises(InvalidInput, match="valid domains: arts, office"):
        svc.recommender.recommend(RecommendRequest(domain="toys"))
    from app.api.errors import PayloadTooLarge

    with pytest.raises(PayloadTooLarge, match="max_history=3"):
        svc.recommender.recommend(
            RecommendRequest(domain="arts", history=["a", "b", "c", "d"], n=2)
        )
    with pytest.raises(PayloadTooLarge, match="max_batch=2"):
        svc.interactions.add([InteractionIn(user_id="u", item_id="arts-1")] * 3)
