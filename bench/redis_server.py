"""A private redis-server for tests and benchmarks (bench/serve.py): free loopback port,
own data directory, AOF on.

    with RedisServer() as server:          # starts it
        store = RedisStore(server.url)
        server.stop()                      # outage (hard=True: SIGKILL, a crash)
        server.start()                     # same port, same data dir: the AOF is replayed

Never touches a system-wide Redis. ``appendfsync always`` makes every acknowledged write
durable before the reply, which is what the durability tests check (a SIGKILL loses
nothing). The process is also killed at interpreter exit if a test forgot to stop it.
"""

from __future__ import annotations

import atexit
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import redis


class _PortInUse(Exception):
    pass


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """One redis-server process; ``start``/``stop`` may be called repeatedly.

    ``data_dir`` defaults to a fresh temporary directory, removed on ``__exit__``.
    """

    def __init__(
        self,
        data_dir: str | Path | None = None,
        *,
        port: int | None = None,
        executable: str = "redis-server",
        start_timeout_s: float = 20.0,
    ) -> None:
        exe = shutil.which(executable)
        if exe is None:
            raise RuntimeError(f"{executable} not found (apt-get install redis-server)")
        self.executable = exe
        self._own_dir = data_dir is None
        self.data_dir = Path(data_dir or tempfile.mkdtemp(prefix="micrec-redis-"))
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # A port picked here can be taken by someone else before redis binds it; the first
        # start then retries on another one (later starts must keep the same port).
        self._pick_port = port is None
        self.port = port or _free_port()
        self.start_timeout_s = start_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None
        atexit.register(self._kill_at_exit)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def log_path(self) -> Path:
        return self.data_dir / "redis.log"

    def start(self) -> None:
        """Start on the same port and data dir and wait until it answers PING (which it
        does only after replaying the AOF)."""
        if self.running:
            return
        for attempt in range(5):
            try:
                self._spawn()
            except _PortInUse:
                if not self._pick_port or attempt == 4:
                    raise RuntimeError(f"port {self.port} is in use") from None
                self.port = _free_port()
            else:
                self._pick_port = False
                return

    def _spawn(self) -> None:
        args = [
            self.executable,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--protected-mode", "yes",
            "--dir", str(self.data_dir),
            "--appendonly", "yes",
            "--appendfsync", "always",
            "--save", "",  # AOF only: no RDB snapshots racing the tests
            "--daemonize", "no",
            "--logfile", str(self.log_path),
        ]  # fmt: skip
        log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        self._proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5, socket_timeout=0.5)
        deadline = time.monotonic() + self.start_timeout_s
        try:
            while True:
                if self._proc.poll() is not None:
                    self._proc = None
                    log = self._log_tail(since=log_start)
                    if "Address already in use" in log:
                        raise _PortInUse
                    raise RuntimeError(f"redis-server exited:\n{log}")
                try:
                    # Our process answering (not another server that took the port), done
                    # loading: INFO is refused with LOADING while the AOF is replayed.
                    if client.info("server").get("process_id") == self._proc.pid:
                        return
                except redis.RedisError:  # not listening yet, or LOADING the AOF
                    pass
                if time.monotonic() > deadline:
                    self.stop(hard=True)
                    raise RuntimeError(f"redis-server did not answer\n{self._log_tail()}")
                time.sleep(0.02)
        finally:
            client.close()

    def stop(self, *, hard: bool = False) -> None:
        """SIGTERM (graceful: the AOF is fsynced) or, with ``hard``, SIGKILL (a crash)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL if hard else signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def _log_tail(self, lines: int = 20, *, since: int = 0) -> str:
        try:
            with self.log_path.open("rb") as f:
                f.seek(since)
                text = f.read().decode(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _kill_at_exit(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()

    def __enter__(self) -> RedisServer:
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
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)
