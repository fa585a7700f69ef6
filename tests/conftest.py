"""Fixtures shared by every test folder: one milvus-lite server and one pair of real tiny
trained bundles per session."""

from __future__ import annotations

import importlib.util
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from bench.milvus_server import MilvusLiteServer

if TYPE_CHECKING:
    from tests.app.real_bundle import RealBundles


@pytest.fixture(scope="session")
def milvus_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MilvusLiteServer]:
    """One milvus-lite server process for the whole session (starting one costs ~1 s of
    imports); tests keep apart by their own collection prefix (:func:`milvus_prefix`)."""
    if importlib.util.find_spec("milvus_lite") is None:
        pytest.skip("milvus-lite not installed (pip install .[milvus])")
    with MilvusLiteServer(tmp_path_factory.mktemp("milvus")) as server:
        yield server


@pytest.fixture
def milvus_prefix() -> str:
    """A collection prefix of this test's own (valid Milvus name start, <= 32 chars)."""
    return "t" + uuid.uuid4().hex[:16]


@pytest.fixture(scope="session")
def real(tmp_path_factory: pytest.TempPathFactory) -> RealBundles:
    """Two real tiny trained bundles (tests/app/real_bundle.py), built once per session for
    every test module that uses them."""
    from tests.app.real_bundle import build_real_bundles

    return build_real_bundles(tmp_path_factory.mktemp("real-bundle"))
