"""Client load for the reliability tests: worker threads sending requests to a service and
logging every outcome (what, when, status) for the assertions and the figures."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

Request = Callable[[httpx.Client, int], httpx.Response]
"""``request(http, k)`` sends the k-th request of a worker and returns the response."""


@dataclass(frozen=True)
class Outcome:
    kind: str  # "read" or "write"
    name: str  # what was sent, e.g. "recommend"
    started: float  # time.monotonic()
    ended: float
    status: int  # 0: no response (transport error)
    retry_after: str | None = None
    error: str = ""


@dataclass
class Traffic:
    """``workers`` = (kind, name, request) per thread; each loops until :meth:`stop`
    (or ``budget`` requests in total), pausing ``pause_s`` between requests."""

    url: str
    workers: list[tuple[str, str, Request]]
    pause_s: float = 0.0
    timeout_s: float = 10.0
    budget: int | None = None
    outcomes: list[Outcome] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Traffic:
        for kind, name, request in self.workers:
            t = threading.Thread(target=self._run, args=(kind, name, request), daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def _run(self, kind: str, name: str, request: Request) -> None:
        with httpx.Client(base_url=self.url, timeout=self.timeout_s) as http:
            k = 0
            while not self._stop.is_set():
                with self._lock:
                    if self.budget is not None and len(self.outcomes) >= self.budget:
                        return
                t0 = time.monotonic()
                try:
                    r = request(http, k)
                    out = Outcome(
                        kind,
                        name,
                        t0,
                        time.monotonic(),
                        r.status_code,
                        r.headers.get("retry-after"),
                        r.text[:200] if r.status_code >= 400 else "",
                    )
                except httpx.HTTPError as err:
                    out = Outcome(kind, name, t0, time.monotonic(), 0, None, repr(err)[:200])
                with self._lock:
                    self.outcomes.append(out)
                k += 1
                if self.pause_s:
                    self._stop.wait(self.pause_s)

    def done(self) -> bool:
        return not any(t.is_alive() for t in self._threads)

    def stop(self, timeout: float = 30.0) -> list[Outcome]:
        self._stop.set()
        for t in self._threads:
            t.join(timeout)
        assert self.done(), "client threads did not stop"
        return self.snapshot()

    def snapshot(self) -> list[Outcome]:
        with self._lock:
            return list(self.outcomes)

    def count(self) -> int:
        with self._lock:
            return len(self.outcomes)


def by_status(outcomes: list[Outcome]) -> dict[str, int]:
    counts = Counter(f"{o.kind}:{o.status}" for o in outcomes)
    return dict(sorted(counts.items()))
