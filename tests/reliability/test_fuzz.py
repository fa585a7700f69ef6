"""Property-based fuzzing of every endpoint with schemathesis, from the app's own OpenAPI.

Each operation of the schema the app serves at ``/openapi.json`` is exercised with
schema-valid and schema-invalid requests (``positive`` and ``negative`` generation),
once with a valid ``X-API-Key`` and once without one, against a real uvicorn server (so
every request has a client timeout: a hung request fails the test). Checked on every
response: no 5xx, the status code is documented, the body and headers conform to the
schema, the content type is declared, schema-invalid input is rejected (4xx), and
endpoints that declare the API key refuse requests without it.

The service: FakeEngine (tests/app/fakes.py), SQLite store, auth on for writes *and*
reads, seeded catalogue + a few registered items so lookups can hit as well as miss.

Also checked (issue 13): every answer is small (``RESPONSE_LIMIT``, whatever the input),
and the admin endpoints are fuzzed with the admin key too (an API key gets 403 there). The
schema itself carries the new limits (id lengths and characters, list sizes, strict types),
so the negative cases include over-long lists and ids, lax types and odd characters.

* CI variant: a few examples per operation and mode (``test_fuzz_api``, bounded well
  under 60 s).
* Deep variant (``-m slow``): many more examples (``test_fuzz_api_deep``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import checks as st_checks
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi import checks as oa_checks

from app.http.main import create_app
from app.settings import Settings
from tests.app.fakes import FakeEngineFactory
from tests.reliability.procs import ADMIN, ADMIN_KEY, API_KEY, AUTH, ThreadServer, record

REQUEST_TIMEOUT_S = 10.0
CI_EXAMPLES = 4
DEEP_EXAMPLES = 150
RESPONSE_LIMIT = 64 * 1024
"""No answer may exceed this, whatever was sent (a 2 MB body once answered 142 MB)."""


def _settings(bundle: Path, state: Path) -> Settings:
    return Settings(
        bundle_path=bundle,
        store_url=f"sqlite:///{state}",
        api_keys=[API_KEY],
        admin_keys=[ADMIN_KEY],
        require_key_for_reads=True,
        torch_threads=1,
        faiss_threads=1,
        warm_encoders=False,
        replica_sync_interval_s=0.2,
        popularity_refresh_s=0.2,
    )


def _schema_app() -> Any:
    # Only for its OpenAPI document (no lifespan runs); the served one is compared below.
    settings = Settings(api_keys=[API_KEY], admin_keys=[ADMIN_KEY])
    app = create_app(settings, engine_factory=FakeEngineFactory())
    return app.openapi()


schema = schemathesis.openapi.from_dict(_schema_app())
schema.config.generation.update(
    modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
    database="none",  # no .hypothesis/ directory in the repository
    deterministic=False,
)


@schemathesis.check
def small_response(ctx: Any, response: Any, case: Any) -> bool | None:
    if case.path == "/metrics":  # the scrape: bounded by route x method x status labels
        return None
    size = len(response.content or b"")
    if size >= RESPONSE_LIMIT:
        raise AssertionError(f"{size}-byte answer (limit {RESPONSE_LIMIT})")
    return None


CHECKS = [
    small_response,
    st_checks.not_a_server_error,
    oa_checks.status_code_conformance,
    oa_checks.content_type_conformance,
    oa_checks.response_schema_conformance,
    oa_checks.response_headers_conformance,
    oa_checks.ignored_auth,
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadServer]:
    root = tmp_path_factory.mktemp("fuzz")
    bundle = FakeEngineFactory().make_bundle(root / "bundle", version="fuzz-v1")
    app = create_app(_settings(bundle, root / "state.db"), engine_factory=FakeEngineFactory())
    with ThreadServer(app) as srv, httpx.Client(base_url=srv.url, timeout=10) as http:
        for k in range(3):  # something to find, delete, be similar to
            r = http.post(
                "/v1/items",
                json={"item_id": f"fz-{k}", "domain": "arts", "title": f"fuzz item {k}"},
                headers=AUTH,
            )
            assert r.status_code == 201, r.text
        r = http.post(
            "/v1/interactions",
            json={"interactions": [{"user_id": "u1", "item_id": "arts-1"}]},
            headers=AUTH,
        )
        assert r.status_code == 200, r.text
        yield srv
        stats = http.get("/metrics").text
    counts: dict[str, int] = {}
    for line in stats.splitlines():
        if line.startswith("micrec_http_requests_total{"):
            status = line.split('status="', 1)[1].split('"', 1)[0]
            counts[status] = counts.get(status, 0) + int(float(line.rsplit(" ", 1)[1]))
    record("fuzz-server", responses_by_status=dict(sorted(counts.items())))
    assert not any(s.startswith("5") for s in counts), counts


def test_served_schema_is_the_fuzzed_one(server: ThreadServer) -> None:
    served = httpx.get(server.url + "/openapi.json", timeout=10).json()
    assert served["paths"].keys() == schema.raw_schema["paths"].keys()


KEYS = {"key": AUTH, "admin-key": ADMIN, "no-key": {}}


def _call(case: Any, server: ThreadServer, key: str) -> None:
    headers = dict(KEYS[key])
    if case.headers:
        case.headers.pop("X-API-Key", None)
    case.call_and_validate(
        base_url=server.url, headers=headers, checks=CHECKS, timeout=REQUEST_TIMEOUT_S
    )


@pytest.mark.parametrize("key", list(KEYS))
@schema.parametrize()
@settings(
    max_examples=CI_EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_fuzz_api(case: Any, server: ThreadServer, key: str) -> None:
    _call(case, server, key)


@pytest.mark.slow
@pytest.mark.parametrize("key", list(KEYS))
@schema.parametrize()
@settings(
    max_examples=DEEP_EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_fuzz_api_deep(case: Any, server: ThreadServer, key: str) -> None:
    _call(case, server, key)
