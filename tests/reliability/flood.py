"""Connection flood (issue 22, finding 3) against a real ``micrec serve``, measured.

A normal client sends ``POST /v1/recommend`` (inline history) at a steady rate, half on
keep-alive connections and half on a new connection each, first alone (the unloaded
figures) and then while a second process holds ``--connections`` connections from another
loopback address (127.0.0.2: another client) that each send partial headers and are
dropped and reopened every ``--hold`` seconds (inside the 10 s header timeout). The row
reports the normal requests' success share and p50/p99 (of the successful ones) in both
phases, the p99 ratio, and what the flood's connections saw (held the full time, answered
by the server, closed by it).

``python -m tests.reliability.attacks connection-flood-300`` runs it among the attacks (the
demo bundle); ``python -m tests.reliability.flood [--fake] [--repo DIR]`` alone, also on
the FakeEngine app (``--fake``) or the code of another tree (``--repo``, as attacks.py).
Not a pytest test: it takes about a minute and reports figures (the behaviour is tested in
tests/app/http/test_connections.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import math
import multiprocessing as mp
import os
import queue
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.reliability.procs import AUTH, REPO, free_port, wait_for

PARTIAL = b"POST /v1/recommend HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
REQUEST_TIMEOUT_S = 10.0
RAMP_S = 1.0
"""The flood opens its connections over this long, then reopens each every hold_s."""

FAKE_LAUNCHER = """
import sys, uvicorn
from app.cli import main
real = uvicorn.run
uvicorn.run = lambda app, *a, **kw: real("tests.reliability.fake_app:create_app", *a, **kw)
sys.exit(main(sys.argv[1:]))
"""
"""``micrec serve`` (its settings, protocol and uvicorn options) with the FakeEngine app."""
NGINX_SNIPPET = REPO / "configs" / "nginx-micrec.conf"


@dataclass
class FloodStats:
    opened: int = 0
    held_full_time: int = 0
    answered: Counter[str] = field(default_factory=Counter)
    closed_by_server: int = 0
    connect_errors: int = 0
    open_now: int = 0
    max_open: int = 0
    stopping: bool = False


async def _slot(
    i: int, n: int, host: str, port: int, source: str, hold_s: float, stats: FloodStats
) -> None:
    await asyncio.sleep(i * RAMP_S / n)
    while not stats.stopping:  # also checked here: 3.11's wait_for can swallow a cancel
        started = time.monotonic()
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port, local_addr=(source, 0)), hold_s
            )
        except (OSError, TimeoutError):
            stats.connect_errors += 1
            await asyncio.sleep(max(0.0, started + hold_s - time.monotonic()))
            continue
        stats.opened += 1
        stats.open_now += 1
        stats.max_open = max(stats.max_open, stats.open_now)
        try:
            writer.write(PARTIAL)
            left = max(0.0, started + hold_s - time.monotonic())
            data = await asyncio.wait_for(reader.read(64), left)
            if data:
                stats.answered[data[9:12].decode(errors="replace")] += 1  # the status
            else:
                stats.closed_by_server += 1
        except TimeoutError:
            stats.held_full_time += 1
        except OSError:
            stats.closed_by_server += 1
        finally:
            stats.open_now -= 1
            writer.close()
        await asyncio.sleep(max(0.0, started + hold_s - time.monotonic()))


async def _flood(
    host: str, port: int, source: str, n: int, hold_s: float, ready: Any, stop: Any
) -> FloodStats:
    stats = FloodStats()
    tasks = [asyncio.create_task(_slot(i, n, host, port, source, hold_s, stats)) for i in range(n)]
    await asyncio.sleep(RAMP_S + 0.5)
    ready.set()
    while not stop.is_set():
        await asyncio.sleep(0.2)
    stats.stopping = True
    for task in tasks:
        task.cancel()
    await asyncio.wait(tasks, timeout=hold_s + 5)
    return stats


def _flood_process(
    host: str, port: int, source: str, n: int, hold_s: float, ready: Any, stop: Any, out: Any
) -> None:
    stats = asyncio.run(_flood(host, port, source, n, hold_s, ready, stop))
    out.put(
        {
            "flood_opened": stats.opened,
            "flood_held_full_time": stats.held_full_time,
            "flood_answered": dict(stats.answered),
            "flood_closed_by_server": stats.closed_by_server,
            "flood_connect_errors": stats.connect_errors,
            "flood_max_open": stats.max_open,
        }
    )


class NormalClient:
    """``POST /v1/recommend`` with http.client (no client-side pool or TLS set-up cost):
    even-numbered requests on kept-alive connections, odd ones on a new connection each."""

    def __init__(self, url: str, body: dict[str, Any]) -> None:
        host, port = url.rsplit("//", 1)[1].split(":")
        self.host, self.port = host, int(port)
        self.body = json.dumps(body).encode()
        self.idle: queue.SimpleQueue[http.client.HTTPConnection] = queue.SimpleQueue()

    def _connection(self, keep: bool) -> http.client.HTTPConnection:
        if keep:
            with contextlib.suppress(queue.Empty):
                return self.idle.get_nowait()
        return http.client.HTTPConnection(self.host, self.port, timeout=REQUEST_TIMEOUT_S)

    def send(self, i: int) -> tuple[bool, str, float, bool]:
        keep = i % 2 == 0
        conn = self._connection(keep)
        t0 = time.perf_counter()
        try:
            conn.request("POST", "/v1/recommend", self.body, {"Content-Type": "application/json"})
            r = conn.getresponse()
            r.read()
            status = str(r.status)
            reusable = keep and not r.will_close
        except (OSError, http.client.HTTPException) as err:
            status, reusable = type(err).__name__, False
        seconds = time.perf_counter() - t0
        if reusable:
            self.idle.put(conn)
        else:
            conn.close()
        return status == "200", status, seconds, keep

    def run(self, rate: float, seconds: float) -> list[tuple[bool, str, float, bool]]:
        """Open loop: request i is sent at start + i / rate whatever the earlier ones do."""
        count = int(rate * seconds)
        with ThreadPoolExecutor(max_workers=64) as pool:
            t0 = time.monotonic()
            futures = []
            for i in range(count):
                time.sleep(max(0.0, t0 + i / rate - time.monotonic()))
                futures.append(pool.submit(self.send, i))
            return [f.result() for f in futures]


def _percentile_ms(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(1000 * ordered[max(0, math.ceil(q * len(ordered)) - 1)], 1)


def summarise(results: list[tuple[bool, str, float, bool]]) -> dict[str, Any]:
    ok = [s for good, _, s, _ in results if good]
    return {
        "requests": len(results),
        "ok": len(ok),
        "ok_share": round(len(ok) / len(results), 4) if results else None,
        "ok_share_keepalive": _share([r for r in results if r[3]]),
        "ok_share_new_connection": _share([r for r in results if not r[3]]),
        "p50_ms": _percentile_ms(ok, 0.50),
        "p99_ms": _percentile_ms(ok, 0.99),
        "statuses": dict(Counter(status for _, status, _, _ in results)),
    }


def _share(results: list[tuple[bool, str, float, bool]]) -> float | None:
    return round(sum(r[0] for r in results) / len(results), 4) if results else None


def run_flood(
    url: str,
    body: dict[str, Any],
    *,
    connections: int = 300,
    hold_s: float = 8.0,
    rate: float = 10.0,
    unloaded_s: float = 15.0,
    flood_s: float = 30.0,
    source: str = "127.0.0.2",
) -> dict[str, Any]:
    """The measurement: unloaded phase, then the same load under the flood."""
    client = NormalClient(url, body)
    load_before = os.getloadavg()
    client.run(rate, 2.0)  # warm-up (not counted)
    unloaded = summarise(client.run(rate, unloaded_s))
    ctx = mp.get_context("spawn")
    ready, stop, out = ctx.Event(), ctx.Event(), ctx.Queue()
    args = (client.host, client.port, source, connections, hold_s, ready, stop, out)
    flood = ctx.Process(target=_flood_process, args=args, daemon=True)
    flood.start()
    try:
        if not ready.wait(60):
            raise RuntimeError("the flood process did not start")
        flooded = summarise(client.run(rate, flood_s))
    finally:
        stop.set()
    flood_stats = out.get(timeout=60)
    flood.join(30)
    ratio = None
    if unloaded["p99_ms"] and flooded["p99_ms"] is not None:
        ratio = round(flooded["p99_ms"] / unloaded["p99_ms"], 2)
    return {
        "connections": connections,
        "hold_s": hold_s,
        "flood_source": source,
        "rate_rps": rate,
        "unloaded": unloaded,
        "flooded": flooded,
        "p99_ratio": ratio,
        **flood_stats,
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
    }


def start_fake_serve(workdir: Path, repo: Path, **env: str) -> tuple[subprocess.Popen[bytes], str]:
    """``micrec serve`` of ``repo`` running the FakeEngine app (no bundle needed)."""
    from tests.app.fakes import FakeEngineFactory

    bundle = FakeEngineFactory().make_bundle(workdir / "bundle")
    (bundle / "manifest.json").write_text("{}")  # micrec serve's check; the fake reads its own
    port = free_port()
    values = {k: v for k, v in os.environ.items() if not k.startswith("MICREC_")}
    values.update(
        {
            "PYTHONPATH": str(repo),
            "OMP_NUM_THREADS": "1",
            "MICREC_STORE_URL": f"sqlite:///{workdir / 'state.db'}",
            "MICREC_LOG_LEVEL": "warning",
            "MICREC_ENCODER_PROCESS": "false",
            "MICREC_WARM_ENCODERS": "false",
            **env,
        }
    )
    args = [sys.executable, "-c", FAKE_LAUNCHER, "serve", "--bundle", str(bundle)]
    log = (workdir / "serve.log").open("wb")
    proc = subprocess.Popen(
        [*args, "--port", str(port)], cwd=repo, env=values, stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    if not wait_for(lambda: httpx.get(url + "/readyz", timeout=2).status_code == 200, 120, 0.2):
        proc.kill()
        raise RuntimeError((workdir / "serve.log").read_text()[-3000:])
    return proc, url


@contextmanager
def nginx_in_front(binary: str, upstream_url: str, workdir: Path) -> Iterator[str]:
    """configs/nginx-micrec.conf (listen and upstream ports replaced) in a minimal
    nginx.conf, proxying to ``upstream_url``; yields nginx's URL."""
    d = workdir / "nginx"
    d.mkdir()
    port = free_port()
    upstream = upstream_url.rsplit(":", 1)[1]
    text = NGINX_SNIPPET.read_text()
    for old, new in (("server 127.0.0.1:8000;", f"server 127.0.0.1:{upstream};"),
                     ("listen 80;", f"listen 127.0.0.1:{port};")):  # fmt: skip
        if text.count(old) != 1:
            raise RuntimeError(f"{NGINX_SNIPPET}: expected one {old!r}")
        text = text.replace(old, new)
    (d / "micrec.conf").write_text(text)
    temp = "\n".join(f"    {kind}_temp_path {d / kind};" for kind in
                     ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))  # fmt: skip
    (d / "nginx.conf").write_text(
        ("user root;\n" if os.geteuid() == 0 else "")
        + f"worker_processes 1;\nworker_rlimit_nofile 8192;\npid {d / 'nginx.pid'};\n"
        f"events {{ worker_connections 4096; }}\n"
        f"http {{\n    access_log off;\n{temp}\n    include {d / 'micrec.conf'};\n}}\n"
    )
    args = [binary, "-p", str(d), "-e", str(d / "error.log"), "-c", str(d / "nginx.conf")]
    proc = subprocess.Popen([*args, "-g", "daemon off;"], stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        if not wait_for(lambda: httpx.get(url + "/readyz", timeout=2).status_code == 200, 30):
            raise RuntimeError((d / "error.log").read_text()[-3000:])
        yield url
    finally:
        proc.terminate()
        proc.wait(30)


def recommend_body(url: str) -> dict[str, Any]:
    """An inline-history recommend of the served model's first domain (the model path)."""
    domain = httpx.get(url + "/v1/model", headers=AUTH, timeout=10).json()["domains"][0]
    r = httpx.post(url + "/v1/recommend", json={"domain": domain, "n": 5}, timeout=30)
    items = [i["item_id"] for i in r.json()["items"]]
    return {"domain": domain, "history": items[:3], "n": 10}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", type=Path, default=REPO / "artifacts/demo-bundle")
    p.add_argument("--fake", action="store_true", help="the FakeEngine app, no bundle")
    p.add_argument("--repo", type=Path, default=REPO, help="source tree to serve")
    p.add_argument("--connections", type=int, default=300)
    p.add_argument("--hold", type=float, default=8.0, help="seconds before reconnecting")
    p.add_argument("--rate", type=float, default=10.0, help="normal requests per second")
    p.add_argument("--unloaded", type=float, default=15.0, help="seconds without the flood")
    p.add_argument("--seconds", type=float, default=30.0, help="seconds under the flood")
    p.add_argument("--source", default="127.0.0.2", help="the flood's source address")
    p.add_argument(
        "--nginx", metavar="BINARY", help="flood nginx (configs/nginx-micrec.conf) in front"
    )
    p.add_argument(
        "--env", action="append", default=[], metavar="KEY=VALUE", help="a MICREC_* setting"
    )
    p.add_argument("--label", default="")
    p.add_argument("--out", type=Path, help="append the row here (JSON lines)")
    args = p.parse_args(argv)
    env = dict(item.split("=", 1) for item in args.env)
    with tempfile.TemporaryDirectory() as tmp:
        if args.fake:
            proc, url = start_fake_serve(Path(tmp), args.repo.resolve(), **env)
        else:
            from tests.reliability.attacks import start_serve

            served = start_serve(
                args.bundle.resolve(), Path(tmp), admin=False, repo=args.repo, **env
            )
            proc, url = served.proc, served.url
        try:
            with contextlib.ExitStack() as stack:
                if args.nginx:
                    url = stack.enter_context(nginx_in_front(args.nginx, url, Path(tmp)))
                row = {
                    "label": args.label,
                    "attack": f"connection-flood-{args.connections}",
                    "app": "fake" if args.fake else "demo-bundle",
                    "proxy": "nginx" if args.nginx else None,
                    "env": env,
                    **run_flood(
                        url,
                        recommend_body(url),
                        connections=args.connections,
                        hold_s=args.hold,
                        rate=args.rate,
                        unloaded_s=args.unloaded,
                        flood_s=args.seconds,
                        source=args.source,
                    ),
                }
        finally:
            proc.terminate()
            proc.wait(30)
    print(json.dumps(row), flush=True)
    if args.out:
        with args.out.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
