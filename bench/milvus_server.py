"""A private milvus-lite server for tests and benchmarks: free loopback port, own data dir.

    with MilvusLiteServer() as server:     # starts it (python -m milvus_lite server)
        settings = Settings(index_backend="milvus", milvus_uri=server.uri, ...)
        server.stop()                      # outage (hard=True: SIGKILL, a crash)
        server.start()                     # same port, same data dir

milvus-lite opened through a ``.db`` path runs inside the process that opens it and locks
its data directory, so several processes (workers, replicas, a test and the services it
starts) can share one only through a server process like this one: the same gRPC API a
Milvus server offers, on one machine. The process is killed at interpreter exit if a
test forgot to stop it.
"""

from __future__ import annotations

import atexit
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class MilvusLiteServer:
    """One ``python -m milvus_lite server`` process; ``start``/``stop`` may be repeated.

    ``data_dir`` defaults to a fresh temporary directory, removed on ``__exit__``.
    """

    def __init__(
        self,
        data_dir: str | Path | None = None,
        *,
        port: int | None = None,
        start_timeout_s: float = 60.0,
    ) -> None:
        self._own_dir = data_dir is None
        root = Path(data_dir or tempfile.mkdtemp(prefix="micrec-milvus-"))
        root.mkdir(parents=True, exist_ok=True)
        self.data_dir = root / "milvus.db"
        self.port = port or _free_port()
        self.start_timeout_s = start_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._root = root
        atexit.register(self._kill_at_exit)

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    @property
    def log_path(self) -> Path:
        return self._root / "milvus-lite.log"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Start on the same port and data dir; returns once the port accepts connections."""
        if self.running:
            return
        args = [
            sys.executable, "-m", "milvus_lite", "server",
            "--data-dir", str(self.data_dir),
            "--host", "127.0.0.1",
            "--port", str(self.port),
        ]  # fmt: skip
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + self.start_timeout_s
        while not _answers(self.port):
            if self._proc.poll() is not None:
                self._proc = None
                raise RuntimeError(f"milvus-lite exited:\n{self._log_tail()}")
            if time.monotonic() > deadline:
                self.stop(hard=True)
                raise RuntimeError(f"milvus-lite did not answer\n{self._log_tail()}")
            time.sleep(0.05)

    def stop(self, *, hard: bool = False) -> None:
        """SIGTERM (graceful) or, with ``hard``, SIGKILL (a crash)."""
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

    def _log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _kill_at_exit(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()

    def __enter__(self) -> MilvusLiteServer:
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
            shutil.rmtree(self._root, ignore_errors=True)
