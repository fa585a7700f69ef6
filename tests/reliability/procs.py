"""Servers for the reliability tests: the app in a uvicorn thread, or a real uvicorn process.

* :class:`ThreadServer` - the app (any engine factory / store) behind a real uvicorn server
  in a thread of the test process: real sockets and request timeouts, cheap to start.
* :class:`ServiceProcess` - ``python -m uvicorn`` (or ``micrec serve``) in its own process
  on a free loopback port, configured only through ``MICREC_*`` environment variables, as
  in production. It runs either the production factory (``app.http.main:create_app``, real
  bundle) or ``tests.reliability.fake_app:create_app`` (the FakeEngine, fast). ``kill()`` is a
  SIGKILL (a crash), ``stop()`` a SIGTERM (graceful), ``start()`` starts it again on the
  same port. Only the PID this object started is ever signalled.
* :func:`record` prints one ``RELIABILITY {json}`` line of figures per test (and appends it
  to ``$RELIABILITY_FIGURES`` when set): what docs/results/reliability.md reports.
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI

REPO = Path(__file__).resolve().parents[2]
API_KEY = "reliability-key-0123456789"
AUTH = {"X-API-Key": API_KEY}
ADMIN_KEY = "reliability-admin-key-0123456789"
ADMIN = {"X-API-Key": ADMIN_KEY}
FAKE_APP = "tests.reliability.fake_app:create_app"
REAL_APP = "app.http.main:create_app"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Callable[[], bool], timeout: float, interval: float = 0.02) -> bool:
    """Poll until true; the timeout only bounds a failing test (no timing assertion)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return True
        except httpx.HTTPError:
            pass
        time.sleep(interval)
    try:
        return bool(predicate())
    except httpx.HTTPError:
        return False


def record(test: str, **figures: Any) -> dict[str, Any]:
    """Print (and optionally append to $RELIABILITY_FIGURES) one line of figures."""
    row = {"test": test, **figures}
    line = json.dumps(row, sort_keys=True, default=str)
    print(f"RELIABILITY {line}")
    target = os.environ.get("RELIABILITY_FIGURES")
    if target:
        with open(target, "a", encoding="utf-8") as f:
            f.write(line + "\n")
    return row


class ThreadServer:
    """``app`` behind uvicorn on a free loopback port, in a daemon thread."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port = int(self._sock.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._server = uvicorn.Server(
            uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=5)
        )
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )

    def __enter__(self) -> ThreadServer:
        self._thread.start()
        if not wait_for(lambda: self._server.started, 30):
            self.__exit__(None, None, None)
            raise RuntimeError("uvicorn did not start")
        with httpx.Client(base_url=self.url, timeout=5) as http:
            if not wait_for(lambda: http.get("/readyz").status_code == 200, 60):
                raise RuntimeError(f"not ready: {http.get('/readyz').text}")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.should_exit = True
        self._thread.join(30)
        self._sock.close()


class ServiceProcess:
    """One uvicorn process serving ``app`` (an import string) with ``env`` settings."""

    def __init__(
        self,
        env: Mapping[str, str],
        *,
        app: str = FAKE_APP,
        log_path: Path,
        port: int | None = None,
        micrec_serve: bool = False,
    ) -> None:
        self.app = app
        self.micrec_serve = micrec_serve
        """Run ``micrec serve`` (the production app, settings from the environment)
        instead of ``uvicorn app``."""
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("MICREC_") or k == "MICREC_THREADS"
        }
        self.env.update(
            {
                "PYTHONPATH": str(REPO),
                "OMP_NUM_THREADS": "1",
                "MKL_NUM_THREADS": "1",
                "HF_HUB_OFFLINE": "1",
                "TRANSFORMERS_OFFLINE": "1",
                "MICREC_TORCH_THREADS": "1",
                "MICREC_FAISS_THREADS": "1",
                "MICREC_API_KEYS": API_KEY,
                "MICREC_ADMIN_KEYS": ADMIN_KEY,
                "MICREC_LOG_LEVEL": "warning",
            }
        )
        self.env.update(env)
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        atexit.register(self._kill_at_exit)

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not running"
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, *, wait_ready: bool = True, timeout: float = 120.0) -> None:
        if self.running:
            return
        args = [
            sys.executable, "-m", "uvicorn", self.app, "--factory",
            "--host", "127.0.0.1", "--port", str(self.port),
            "--log-level", "warning", "--timeout-graceful-shutdown", "5",
        ]  # fmt: skip
        if self.micrec_serve:
            args = [sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1",
                    "--port", str(self.port)]  # fmt: skip
        with self.log_path.open("ab") as log:
            log.write(f"\n--- start {self.starts} ---\n".encode())
            self.proc = subprocess.Popen(
                args,
                cwd=REPO,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.starts += 1
        if wait_ready:
            self.wait_ready(timeout)

    def _answers(self, path: str, status: int) -> bool:
        if not self.running:
            raise RuntimeError(
                f"service exited ({self.proc and self.proc.returncode}):\n{self.log_tail()}"
            )
        return httpx.get(self.url + path, timeout=2).status_code == status

    def wait_ready(self, timeout: float = 120.0) -> None:
        if not wait_for(lambda: self._answers("/readyz", 200), timeout, 0.1):
            raise RuntimeError(f"service not ready after {timeout} s:\n{self.log_tail()}")

    def wait_listening(self, timeout: float = 120.0) -> None:
        if not wait_for(lambda: self._answers("/healthz", 200), timeout, 0.1):
            raise RuntimeError(f"service not listening after {timeout} s:\n{self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL: a crash (nothing flushed, no shutdown hooks)."""
        self._signal(signal.SIGKILL)

    def stop(self) -> None:
        """SIGTERM: graceful shutdown (SIGKILL after 30 s)."""
        self._signal(signal.SIGTERM)

    def _signal(self, sig: signal.Signals) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)

    def rss_kib(self) -> int:
        """VmRSS of the process, KiB (from /proc/<pid>/status)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("VmRSS not found")

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _kill_at_exit(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()

    def __enter__(self) -> ServiceProcess:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        atexit.unregister(self._kill_at_exit)
