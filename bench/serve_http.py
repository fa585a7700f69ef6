"""Single requests to a running service on fresh connections (so with 2 workers each may
reach either): seeding and warm-up before the load points, and the
registration-to-visibility probe."""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np
from serve_common import API_KEY, REGISTER_TYPES, TYPES, log
from serve_procs import ServerProcess


def http_json(
    base: str, method: str, path: str, body: Any = None, timeout: float = 60
) -> tuple[int, Any]:
    """One request on a fresh connection (so with 2 workers it may reach either)."""
    import http.client

    u = base.removeprefix("http://")
    host, port = u.split(":")
    c = http.client.HTTPConnection(host, int(port), timeout=timeout)
    headers = {"X-API-Key": API_KEY}
    data = None
    if body is not None:
        data = body if isinstance(body, str | bytes) else json.dumps(body)
        headers["Content-Type"] = "application/json"
    c.request(method, path, body=data, headers=headers)
    r = c.getresponse()
    raw = r.read()
    c.close()
    try:
        return r.status, json.loads(raw)
    except ValueError:
        return r.status, raw.decode(errors="replace")


def seed_and_warm(
    server: ServerProcess, reqs: dict[str, Any], workers: int, ready_timeout: float
) -> None:
    """Store the known users' histories, then send every request type a few times."""
    rows = [r for rs in reqs["stored"].values() for r in rs]
    deadline = time.monotonic() + ready_timeout

    def call(path: str, body: Any) -> tuple[int, Any]:
        # With several workers /readyz may have answered from one that was ready while
        # another is still loading (503): retry until every answer is a model's.
        while True:
            status, resp = http_json(server.base_url, "POST", path, body)
            if status != 503 or time.monotonic() > deadline:
                return status, resp
            time.sleep(1.0)

    for k in range(0, len(rows), 500):
        status, body = call("/v1/interactions", {"interactions": rows[k : k + 500]})
        if status != 200:
            raise RuntimeError(f"seeding interactions failed: {status} {body}")
    # Every request type a few times on fresh connections, so each worker has loaded
    # its encoders and run every code path at least once.
    for k in range(3 * workers):
        for kind in TYPES:
            body = reqs["bodies"][kind][k % len(reqs["bodies"][kind])]
            path = "/v1/items" if kind in REGISTER_TYPES else "/v1/recommend"
            body = body.replace("__ID__", f"warm-{kind}-{k}")
            status, resp = call(path, body)
            if status >= 400:
                raise RuntimeError(f"warm-up {kind} failed: {status} {resp}")
    # Then /readyz must answer 200 on 50 fresh connections in a row.
    server.wait_ready("/readyz", workers * 12 + 2, ready_timeout)


def visibility(server: ServerProcess, reqs: dict[str, Any], trials: int) -> dict[str, Any]:
    """Register a text+image item under a category no other item has, then send
    ``/v1/recommend`` for ``history=[it]`` filtered on that category (n=1) on fresh
    connections until the new item is returned. (Without the filter a cold item need
    not rank in anyone's top n, so absence would prove nothing.)"""
    out: list[dict[str, Any]] = []
    stamp = int(time.time() * 1000)
    for k in range(trials):
        body = json.loads(reqs["bodies"]["reg_image"][k % len(reqs["bodies"]["reg_image"])])
        iid = f"visible-{stamp}-{k}"
        category = f"benchvisible{stamp}x{k}"
        body |= {"item_id": iid, "categories": [category]}
        t0 = time.perf_counter()
        status, resp = http_json(server.base_url, "POST", "/v1/items", body)
        t_created = time.perf_counter()
        if status != 201:
            out.append({"error": f"{status} {resp}"})
            continue
        polls = 0
        source = None
        rec = {
            "history": [iid],
            "domain": body["domain"],
            "n": 1,
            "category": category,
            "exclude_seen": False,
        }
        t_poll = t_created
        while time.perf_counter() - t_created < 5.0:
            polls += 1
            t_poll = time.perf_counter()
            status, resp = http_json(server.base_url, "POST", "/v1/recommend", rec)
            items = resp.get("items", []) if status == 200 else []
            if items and items[0]["item_id"] == iid:
                source = items[0]["source"]
                break
        t_seen = time.perf_counter()
        out.append(
            {
                "register_ms": (t_created - t0) * 1000,
                "created_to_returned_ms": (t_seen - t_created) * 1000 if source else None,
                "last_recommend_ms": (t_seen - t_poll) * 1000,
                "polls": polls,
                "source": source,
            }
        )
    ok = [o for o in out if o.get("source")]
    summary: dict[str, Any] = {"trials": out, "returned": len(ok), "total": len(out)}
    if ok:
        v = np.array([o["created_to_returned_ms"] for o in ok])
        summary |= {
            "first_poll_share": sum(o["polls"] == 1 for o in ok) / len(ok),
            "created_to_returned_ms_p50": float(np.percentile(v, 50)),
            "created_to_returned_ms_max": float(v.max()),
            "sources": sorted({o["source"] for o in ok}),
        }
    log(
        f"visibility: {summary.get('returned')}/{summary.get('total')} returned, "
        f"on first poll {summary.get('first_poll_share')}, "
        f"p50 {summary.get('created_to_returned_ms_p50')} ms, "
        f"max {summary.get('created_to_returned_ms_max')} ms, {summary.get('sources')}"
    )
    return summary
