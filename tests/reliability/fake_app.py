"""uvicorn factory for reliability tests that run the service as a real process.

``python -m uvicorn tests.reliability.fake_app:create_app --factory`` builds the production
app (``app.http.main.create_app``: settings from ``MICREC_*``, the store named by
``MICREC_STORE_URL``, every middleware) with one substitution: the model is the FakeEngine
test double (tests/app/fakes.py), loaded from a fake bundle written by
``FakeEngineFactory.make_bundle`` at ``MICREC_BUNDLE_PATH``. Fast to start, so tests about
processes, stores and replicas do not pay for a real model.
"""

from __future__ import annotations

from fastapi import FastAPI

from app.http.main import create_app as create_production_app
from tests.app.fakes import FakeEngineFactory


def create_app() -> FastAPI:
    return create_production_app(engine_factory=FakeEngineFactory())
