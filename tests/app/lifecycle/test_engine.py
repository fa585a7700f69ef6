"""The engine as the service sees it (app/lifecycle/engine.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from app.lifecycle.engine import Engine, embedding_method
from model.serving_types import USER_METHODS, UserEmbedding
from tests.app.fakes import FakeEngineFactory


def test_the_fake_engine_implements_the_protocol(tmp_path: Path) -> None:
    factory = FakeEngineFactory()
    engine = factory(factory.make_bundle(tmp_path / "b"))
    assert isinstance(engine, Engine)
    # Bundle lookups as the real engine answers them: (domain, catalogue row) or None.
    assert engine.bundle_position("arts-7") == ("arts", 7)
    assert engine.catalogue("arts").item_ids[7] == "arts-7"
    assert engine.bundle_position("nope") is None


@pytest.mark.parametrize("method", USER_METHODS)
def test_every_engine_user_method_is_typed(method: str) -> None:
    assert embedding_method(UserEmbedding(np.zeros(2), method, 0)) == method


def test_an_unknown_user_method_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown user embedding method 'magic'"):
        embedding_method(UserEmbedding(np.zeros(2), "magic", 0))
