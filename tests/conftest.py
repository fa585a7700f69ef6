"""Fixtures shared by every test folder: one milvus-lite server per session."""

from __future__ import annotations

import importlib.util
import uuid
from collections.abc import Iterator

import pytest

from bench.milvus_server import MilvusLiteServer


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
