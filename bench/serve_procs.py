"""Processes of the serving benchmark: a uvicorn server in its own process group (RSS,
PSS/USS, CPU seconds, readiness), a private Redis, and the load-average sampler."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from redis_server import RedisServer
from serve_common import ROOT


class LoadAvg:
    """Samples the 1-minute load average every few seconds in the background."""

    def __init__(self, every_s: float = 5.0) -> None:
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, args=(every_s,), daemon=True)

    def _run(self, every: float) -> None:
        while True:
            self.samples.append((time.time(), os.getloadavg()[0]))
            if self._stop.wait(every):
                return

    def start(self) -> LoadAvg:
        self._t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._t.join()

    def between(self, t0: float, t1: float) -> float | None:
        vals = [v for t, v in self.samples if t0 <= t <= t1 + 5]
        return round(max(vals), 2) if vals else None


class ServerProcess:
    """A uvicorn server started here (own process group, so stopping it stops its workers)."""

    def __init__(
        self, cmd: list[str], env: dict[str, str], port: int, log_path: Path, cwd: Path = ROOT
    ) -> None:
        self.cmd, self.env, self.port, self.log_path, self.cwd = cmd, env, port, log_path, cwd
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        logf = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.cmd,
            env=self.env,
            cwd=self.cwd,
            stdin=subprocess.DEVNULL,
            stdout=logf,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def processes(self) -> list[Any]:
        import psutil

        if self.proc is None or self.proc.poll() is not None:
            return []
        try:
            parent = psutil.Process(self.proc.pid)
            return [parent, *parent.children(recursive=True)]
        except psutil.Error:
            return []

    def rss_mb(self) -> float:
        total = 0
        for p in self.processes():
            with suppress(Exception):
                total += p.memory_info().rss
        return total / 2**20

    def memory(self) -> dict[str, Any]:
        """RSS, PSS and USS (MB) summed over the server's processes, and per process. RSS
        counts a page shared by N processes N times; PSS counts 1/N of it in each, so the
        PSS sum is what the machine holds. Per process also ``smaps``: the kernel's
        ``/proc/<pid>/smaps_rollup`` split (MB) of anonymous memory (heap, tensors: only
        swap could free it, and there is none) from file pages (mapped bundle, cache and
        index files: clean ones the kernel drops under pressure and reads back), and the
        peak RSS (``VmHWM``)."""
        out: dict[str, Any] = {"rss_mb": 0.0, "pss_mb": 0.0, "uss_mb": 0.0, "processes": []}
        for p in self.processes():
            with suppress(Exception):
                m = p.memory_full_info()
                row = {"pid": p.pid, "name": " ".join(p.cmdline()[-4:])[:80]}
                for key in ("rss", "pss", "uss"):
                    row[f"{key}_mb"] = getattr(m, key) / 2**20
                    out[f"{key}_mb"] += row[f"{key}_mb"]
                row["smaps"] = smaps_rollup(p.pid)
                out["processes"].append(row)
        return out

    def cpu_s(self) -> float:
        total = 0.0
        for p in self.processes():
            try:
                c = p.cpu_times()
                total += c.user + c.system
            except Exception:
                pass
        return total

    def wait_ready(self, path: str, workers: int, timeout_s: float) -> float:
        """Seconds until ``path`` answered 200 on 4*workers fresh connections in a row."""
        import http.client

        t0 = time.monotonic()
        ok = 0
        while ok < 4 * workers:
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError(f"server exited; log: {self.log_path}\n{self.log_tail()}")
            if time.monotonic() - t0 > timeout_s:
                raise RuntimeError(f"server not ready after {timeout_s} s; log: {self.log_path}")
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                c.request("GET", path)
                status = c.getresponse().status
                c.close()
            except OSError:
                status = 0
            if status == 200:
                ok += 1
            else:
                ok = 0
                time.sleep(0.5)
        return time.monotonic() - t0

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None


SMAPS_FIELDS = (
    "Rss",
    "Pss",
    "Pss_Anon",
    "Pss_File",
    "Shared_Clean",
    "Private_Clean",
    "Private_Dirty",
    "Anonymous",
)


def smaps_rollup(pid: int) -> dict[str, float]:
    """``SMAPS_FIELDS`` of ``/proc/<pid>/smaps_rollup`` and ``VmHWM`` of its status, in MB
    (a field the kernel does not report is left out; {} if the process is gone)."""
    out: dict[str, float] = {}
    try:
        for path, fields in (
            (f"/proc/{pid}/smaps_rollup", SMAPS_FIELDS),
            (f"/proc/{pid}/status", ("VmHWM",)),
        ):
            for line in Path(path).read_text().splitlines():
                key, _, rest = line.partition(":")
                if key in fields and rest.strip().endswith("kB"):
                    out[key] = int(rest.split()[0]) / 1024
    except OSError:
        return {}
    return out


@contextmanager
def redis_server() -> Iterator[str]:
    with RedisServer() as server:
        yield server.url
