"""The service's background threads: the replica sync loop, the bundle follower, model
loads and their encoder warm-up.

Each runs until it is done or :attr:`BackgroundThreads.stopping` is set; :meth:`stop`
sets it and joins them, because a daemon thread killed inside torch or FAISS at
interpreter exit aborts the process ("terminate called without an active exception").
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class BackgroundThreads:
    def __init__(self) -> None:
        self.stopping = threading.Event()
        """Set by :meth:`stop`: loops end at their next wait, long work at its next check."""
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def start(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()] + [thread]

    def stop(self, timeout: float = 60.0) -> None:
        """Tell every thread to stop and wait for them (``timeout`` in all)."""
        self.stopping.set()
        deadline = time.monotonic() + timeout
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
