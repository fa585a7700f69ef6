"""The security findings of issues 13 and 22, measured against a real ``micrec serve``
(issue 22's inputs in tests/reliability/attacks_inputs.py, its privacy and smaller
findings in tests/reliability/attacks_round3.py, its connection flood in
tests/reliability/flood.py).

``python -m tests.reliability.attacks --bundle artifacts/demo-bundle --out FILE.jsonl``
starts ``micrec serve`` (one worker, SQLite store in a temporary directory or, with
``--store redis``, a private redis-server; one API key plus two for the popularity
control, otherwise default settings), sends each attack in turn and records, per attack: the HTTP
status, the response size, the wall time, the worker's RSS growth (VmRSS after minus
before) and its peak growth (VmHWM, reset before each attack through
``/proc/<pid>/clear_refs``), how many answers during the attack were 5xx, plus a note on
what the answer revealed. The rows are what
docs/results/reliability.md ("Security", "Round 3") reports, before and after the fixes.
The attacks of issue 22 (round 3) are in tests/reliability/attacks_round3.py.

Not a pytest test (it takes a real bundle and minutes); the findings themselves are
tested in tests/reliability/test_security_hardening.py.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

from tests.reliability import flood
from tests.reliability.attacks_inputs import INPUT_ATTACKS, images_dir
from tests.reliability.procs import API_KEY, AUTH, REPO, free_port, wait_for

VICTIM = "victim-user"
ADMIN_KEY = "attack-admin-key-0123456789"
ADMIN = {"X-API-Key": ADMIN_KEY}
HTTP_METHODS = [
    "GET",
    "HEAD",
    "POST",
    "PUT",
    "DELETE",
    "OPTIONS",
    "PATCH",
    "TRACE",
    "COPY",
    "LOCK",
    "MKCOL",
    "MOVE",
    "PROPFIND",
    "PROPPATCH",
    "SEARCH",
    "UNLOCK",
    "BIND",
    "REBIND",
    "UNBIND",
    "ACL",
    "REPORT",
    "MKACTIVITY",
    "CHECKOUT",
    "MERGE",
    "M-SEARCH",
    "NOTIFY",
    "SUBSCRIBE",
    "UNSUBSCRIBE",
    "PURGE",
    "MKCALENDAR",
    "LINK",
    "UNLINK",
    "SOURCE",
]
"""Methods the HTTP parser (httptools) accepts; it answers 400 to made-up ones itself."""


def png_of(width: int, height: int) -> bytes:
    """A real (uniform, so tiny) PNG of ``width`` x ``height``."""
    buf = io.BytesIO()
    Image.new("L", (width, height), 128).save(buf, "PNG")
    return buf.getvalue()


def _status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{key} not found")


def _reset_peak(pid: int) -> None:
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets VmHWM to VmRSS


EXTRA_KEYS = ("attack-legit-key-one-0123", "attack-legit-key-two-0123")
"""Two more API keys: legitimate traffic from several clients (popularity control)."""


@dataclass
class Served:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path
    domain: str
    item: str
    admin: bool
    workdir: Path
    repo: Path
    bundle: Path
    env: dict[str, str]
    """The served process's environment (for CLI commands run on the same store)."""
    store_dir: Path
    """The directory of the store's files (the SQLite file, or redis-server's data)."""
    acked: list[tuple[str, str]]
    """(user, item) of interactions the attacks had acknowledged (checked at the end)."""
    db: Path
    """The SQLite file (when the store is SQLite)."""
    images: Path
    """The served ``MICREC_ITEM_IMAGES_DIR``."""


def start_serve(
    bundle: Path,
    workdir: Path,
    *,
    admin: bool,
    repo: Path = REPO,
    store_url: str | None = None,
    store_dir: Path | None = None,
    **env: str,
) -> Served:
    port = free_port()
    values = {
        k: v for k, v in os.environ.items() if not k.startswith("MICREC_") or k == "MICREC_THREADS"
    }
    values.update(
        {
            "PYTHONPATH": str(repo),
            "OMP_NUM_THREADS": "1",
            "MICREC_TORCH_THREADS": "1",
            "MICREC_FAISS_THREADS": "1",
            "MICREC_API_KEYS": ",".join((API_KEY, *EXTRA_KEYS)),
            "MICREC_STORE_URL": store_url or f"sqlite:///{workdir / 'state.db'}",
            "MICREC_LOG_LEVEL": "warning",
            # reloads only from the attack's own directory; caches there too (never
            # next to the bundle, which may be another checkout's)
            "MICREC_BUNDLES_DIR": str(workdir / "bundles"),
            "MICREC_SERVING_CACHE_DIR": str(workdir / "serving-cache"),
            "MICREC_ITEM_IMAGES_DIR": str(images_dir(workdir)),
            **({"MICREC_ADMIN_KEYS": ADMIN_KEY} if admin else {}),
            **env,
        }
    )
    (workdir / "bundles").mkdir(exist_ok=True)
    log = workdir / "serve.log"
    args = [sys.executable, "-m", "app.cli", "serve", "--bundle", str(bundle), "--port", str(port)]
    with log.open("wb") as f:
        proc = subprocess.Popen(args, cwd=repo, env=values, stdout=f, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    if not wait_for(lambda: httpx.get(url + "/readyz", timeout=2).status_code == 200, 300, 0.2):
        proc.kill()
        raise RuntimeError(log.read_text()[-3000:])
    info = httpx.get(url + "/v1/model", headers=AUTH, timeout=10).json()
    domain = info["domains"][0]
    r = httpx.post(url + "/v1/recommend", json={"domain": domain, "n": 1}, timeout=30)
    item = r.json()["items"][0]["item_id"]
    # Warm the encoders (registration) so the image attacks measure decoding, not loading.
    httpx.post(
        url + "/v1/items",
        json={"item_id": "warm-up", "domain": domain, "title": "warm up"},
        headers=AUTH,
        timeout=120,
    )
    return Served(
        proc, url, log, domain, item, admin, workdir, repo, bundle, values,
        store_dir or workdir, [], workdir / "state.db", images_dir(workdir),
    )  # fmt: skip


def _slow_headers(url: str, seconds: float) -> dict[str, Any]:
    """Trickle one header byte per second; how long until the server hangs up."""
    host, port = url.rsplit("//", 1)[1].split(":")
    start = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        while time.monotonic() - start < seconds:
            try:
                s.sendall(b"X")
                s.settimeout(1.0)
                data = s.recv(4096)
                if data == b"" or data:
                    return {
                        "closed_after_s": round(time.monotonic() - start, 1),
                        "answer": data[:40].decode(errors="replace"),
                    }
            except TimeoutError:
                continue
            except OSError:
                return {"closed_after_s": round(time.monotonic() - start, 1)}
    return {"closed_after_s": None, "held_open_s": seconds}


Attack = Callable[[Served, httpx.Client], tuple[httpx.Response | None, dict[str, Any]]]


def _history_leak(s: Served, http: httpx.Client) -> tuple[httpx.Response | None, dict[str, Any]]:
    rows = [{"user_id": VICTIM, "item_id": s.item}]
    http.post("/v1/interactions", json={"interactions": rows}, headers=AUTH)
    path = f"/v1/users/{VICTIM}/recommendations"
    r = http.get(path, params={"domain": s.domain, "n": 500, "exclude_seen": "false"})
    note: dict[str, Any] = {}
    if r.status_code == 200:
        h = r.json()["history"]
        note = {"known_user": h["known_user"], "items_used": h["items_used"]}
    return r, note


def _recommend_ints(count: int) -> Attack:
    def attack(s: Served, http: httpx.Client) -> tuple[httpx.Response | None, dict[str, Any]]:
        ints = ",".join(["1"] * count)
        body = f'{{"domain":"{s.domain}","history":[{ints}]}}'
        r = http.post("/v1/recommend", content=body, headers={"Content-Type": "application/json"})
        return r, {"request_bytes": len(body)}

    return attack


def _unknown_keys(s: Served, http: httpx.Client) -> tuple[httpx.Response | None, dict[str, Any]]:
    body = json.dumps({"domain": s.domain, **{f"k{k}": 0 for k in range(100_000)}})
    r = http.post("/v1/recommend", content=body, headers={"Content-Type": "application/json"})
    return r, {"request_bytes": len(body)}


def _image(width: int, height: int) -> Attack:
    def attack(s: Served, http: httpx.Client) -> tuple[httpx.Response | None, dict[str, Any]]:
        data = png_of(width, height)
        r = http.post(
            "/v1/items",
            data={"item_id": f"img-{width}x{height}-{time.time_ns()}", "domain": s.domain},
            files={"image": ("x.png", data, "image/png")},
            headers=AUTH,
        )
        return r, {"request_bytes": len(data)}

    return attack


def _bad_rows(s: Served, http: httpx.Client) -> tuple[httpx.Response | None, dict[str, Any]]:
    """~1 MB of interaction rows, every one invalid (a keyed client)."""
    rows = [{"user_id": k, "item_id": k, "domain": "d" * 80} for k in range(9000)]
    body = json.dumps({"interactions": rows})
    r = http.post(
        "/v1/interactions",
        content=body,
        headers={**AUTH, "Content-Type": "application/json"},
    )
    return r, {"request_bytes": len(body)}


def _strict_n(s: Served, http: httpx.Client) -> tuple[httpx.Response | None, dict[str, Any]]:
    return http.post("/v1/recommend", json={"domain": s.domain, "n": True}), {}


def _repost_item(s: Served, http: httpx.Client) -> tuple[httpx.Response | None, dict[str, Any]]:
    body = {"item_id": "retry-me", "domain": s.domain, "title": "retry me"}
    first = http.post("/v1/items", json=body, headers=AUTH)
    return http.post("/v1/items", json=body, headers=AUTH), {"first": first.status_code}


def _popularity(s: Served, http: httpx.Client) -> tuple[httpx.Response | None, dict[str, Any]]:
    def score() -> float:
        r = http.post("/v1/recommend", json={"domain": s.domain, "n": 500})
        return next((i["score"] for i in r.json()["items"] if i["item_id"] == s.item), 0.0)

    before = score()
    rows = [{"user_id": "booster", "item_id": s.item}] * 100
    r = http.post("/v1/interactions", json={"interactions": rows}, headers=AUTH)
    time.sleep(6)  # popularity_refresh_s
    return r, {"popularity_before": before, "popularity_after_100_same_rows": score()}


def _reload(path: str) -> Attack:
    def attack(s: Served, http: httpx.Client) -> tuple[httpx.Response | None, dict[str, Any]]:
        key = ADMIN if s.admin else AUTH
        r = http.post("/v1/admin/reload", json={"bundle_path": path}, headers=key)
        wait_for(
            lambda: http.get("/v1/admin/reload", headers=key).json()["status"] != "loading", 60
        )
        status = http.get("/v1/admin/reload", headers=key).json()
        tracebacks = s.log.read_text().count("Traceback")
        return r, {"reload": status.get("status"), "tracebacks_in_log": tracebacks}

    return attack


def _model_no_key(s: Served, http: httpx.Client) -> tuple[httpx.Response | None, dict[str, Any]]:
    r = http.get("/v1/model")
    return r, {"shows_bundle_path": "bundle_path" in r.text}


def _methods(s: Served, http: httpx.Client) -> tuple[httpx.Response | None, dict[str, Any]]:
    for method in HTTP_METHODS:
        http.request(method, "/healthz")
    r = http.get("/metrics")
    labels = {part.split('"', 1)[0] for part in r.text.split('method="')[1:]}
    return r, {"metrics_bytes": len(r.content), "method_labels": len(labels)}


def _slow(s: Served, http: httpx.Client) -> tuple[httpx.Response | None, dict[str, Any]]:
    return None, _slow_headers(s.url, 20)


ATTACKS: dict[str, Attack] = {
    "user-history-without-key": _history_leak,
    "recommend-history-1e6-ints": _recommend_ints(1_000_000),
    "recommend-history-3e5-ints": _recommend_ints(300_000),
    "recommend-1e5-unknown-keys": _unknown_keys,
    "recommend-history-1e5-ints": _recommend_ints(100_000),
    "interactions-9000-bad-rows": _bad_rows,
    "png-100000x20": _image(100_000, 20),
    "png-40000000x1": _image(40_000_000, 1),
    "n-true": _strict_n,
    "item-re-post": _repost_item,
    "popularity-100-same-rows": _popularity,
    "reload-/etc": _reload("/etc"),
    "reload-long-path": _reload("a" * 5000),
    "model-info-without-key": _model_no_key,
    "metrics-33-methods": _methods,
    "slow-header-trickle": _slow,
}


def _connection_flood(
    s: Served, http: httpx.Client
) -> tuple[httpx.Response | None, dict[str, Any]]:
    """Issue 22: 300 partial-header connections from another address, reopened every 8 s,
    under a steady 10 recommends/s (tests/reliability/flood.py)."""
    return None, flood.run_flood(s.url, flood.recommend_body(s.url))


def all_attacks() -> dict[str, Attack]:
    """Every attack: issue 13's above, issue 22's (round 3) from their modules."""
    from tests.reliability.attacks_round3 import ROUND3

    return {
        **ATTACKS,
        **INPUT_ATTACKS,
        **ROUND3,
        "connection-flood-300": _connection_flood,
    }


def measure(served: Served, names: list[str]) -> list[dict[str, Any]]:
    pid = served.proc.pid
    attacks = all_attacks()
    rows = []
    errors = [0]

    def count_5xx(response: httpx.Response) -> None:
        errors[0] += response.status_code >= 500

    with httpx.Client(
        base_url=served.url, timeout=120, event_hooks={"response": [count_5xx]}
    ) as http:
        for name in names:
            errors[0] = 0
            _reset_peak(pid)
            rss0 = _status_kib(pid, "VmRSS")
            t0 = time.perf_counter()
            try:
                r, note = attacks[name](served, http)
                status, size = (r.status_code, len(r.content)) if r is not None else (None, None)
            except httpx.HTTPError as err:
                status, size, note = None, None, {"error": f"{type(err).__name__}: {err}"}
            seconds = time.perf_counter() - t0
            alive = served.proc.poll() is None
            row = {
                "attack": name,
                "status": status,
                "responses_5xx": errors[0],
                "response_bytes": size,
                "seconds": round(seconds, 2),
                "rss_growth_mib": round((_status_kib(pid, "VmRSS") - rss0) / 1024, 1)
                if alive
                else None,
                "peak_growth_mib": round((_status_kib(pid, "VmHWM") - rss0) / 1024, 1)
                if alive
                else None,
                **note,
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", type=Path, default=REPO / "artifacts/demo-bundle")
    p.add_argument("--out", type=Path, help="append the rows here (JSON lines)")
    p.add_argument("--label", default="", help="stored with every row (e.g. before, after)")
    p.add_argument(
        "--admin-key", action="store_true", help="set MICREC_ADMIN_KEYS and reload with it"
    )
    p.add_argument(
        "--repo",
        type=Path,
        default=REPO,
        help="source tree to serve (e.g. `git archive <commit>` unpacked: the code before)",
    )
    p.add_argument(
        "--store", choices=("sqlite", "redis"), default="sqlite", help="the state store served"
    )
    p.add_argument(
        "--workdir", type=Path, help="keep the store, log and pictures here (default: a temp dir)"
    )
    p.add_argument("attacks", nargs="*", default=list(all_attacks()), help="names (default all)")
    args = p.parse_args(argv)
    with contextlib.ExitStack() as stack:
        if args.workdir is not None:
            args.workdir.mkdir(parents=True, exist_ok=True)
            tmp = str(args.workdir)
        else:
            tmp = stack.enter_context(tempfile.TemporaryDirectory())
        store: dict[str, Any] = {}
        if args.store == "redis":
            from bench.redis_server import RedisServer

            server = stack.enter_context(RedisServer(Path(tmp) / "redis"))
            store = {"store_url": server.url, "store_dir": server.data_dir}
        served = start_serve(
            args.bundle.resolve(), Path(tmp), admin=args.admin_key, repo=args.repo, **store
        )
        try:
            rows = measure(served, args.attacks)
        finally:
            served.proc.terminate()
            served.proc.wait(30)
    print(json.dumps({"summary": summary(rows)}), flush=True)
    if args.out:
        with args.out.open("a", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps({"label": args.label, "store": args.store, **row}) + "\n")
    return 0


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """What the round-3 targets ask: no 5xx, no acknowledged write lost."""
    fivexx = [r["attack"] for r in rows if (r.get("status") or 0) >= 500]
    fivexx += [r["attack"] for r in rows if r.get("answers_5xx") or r.get("responses_5xx")]
    lost = sum(int(r.get("acknowledged_lost", 0)) for r in rows)
    return {"attacks": len(rows), "answers_5xx": fivexx, "acknowledged_writes_lost": lost}


if __name__ == "__main__":
    sys.exit(main())
