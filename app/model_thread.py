"""One dedicated thread per worker for the model work of recommends (``model_thread``).

The alternative to running the model work inline on the event loop: the loop hands each
request's work to this thread and awaits it. The thread takes *every* job waiting when it
wakes (one queue wake-up per batch) and runs them in turn, handing each answer back as soon
as it is ready; when idle a job runs at once (no added wait). The jobs of a batch are not
computed together (fold-in and search one request at a time). Inline vs this thread:
docs/results/serve-steps/hotpath.md.

With ``count`` > 1 (``model_threads``) several threads share one queue and each takes one
job at a time: the GIL-free parts of a fold-in and a search (torch, FAISS) of different
requests then overlap on different cores, which one thread cannot do.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

_Job = tuple[Callable[[], Any], asyncio.Future[Any], asyncio.AbstractEventLoop]
_Done = tuple[asyncio.Future[Any], Any, BaseException | None]


def _deliver(done: list[_Done]) -> None:
    for future, result, error in done:
        if future.cancelled():
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)


class ModelThread:
    """Started by the first :meth:`run`; :meth:`stop` ends it."""

    def __init__(self, name: str = "micrec-model", count: int = 1) -> None:
        if count < 1:
            raise ValueError(f"count must be >= 1, got {count}")
        self.name = name
        self.count = count
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self.batches = 0
        self.jobs = 0

    def _thread_name(self, i: int) -> str:
        return self.name if self.count == 1 else f"{self.name}-{i}"

    async def run(self, fn: Callable[[], T]) -> T:
        """``fn()`` on the model thread; its result (or exception) here."""
        if not self._threads:
            with self._lock:
                if not self._threads:
                    self._threads = [
                        threading.Thread(target=self._run, name=self._thread_name(i), daemon=True)
                        for i in range(self.count)
                    ]
                    for thread in self._threads:
                        thread.start()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.put((fn, future, loop))
        return await future

    def stop(self, timeout: float = 10.0) -> None:
        """End the threads after the jobs already queued."""
        with self._lock:
            threads, self._threads = self._threads, []
        for _ in threads:
            self._jobs.put(None)
        for thread in threads:
            thread.join(timeout)

    def _run(self) -> None:
        while True:
            first = self._jobs.get()
            if first is None:
                return
            batch = [first]
            stopping = False
            while self.count == 1:  # several threads: one job each, so they overlap
                try:
                    job = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    stopping = True
                    break
                batch.append(job)
            self.batches += 1
            self.jobs += len(batch)
            for fn, future, loop in batch:
                try:
                    done: _Done = (future, fn(), None)
                except BaseException as err:  # handed to the awaiting request
                    done = (future, None, err)
                # Each answer goes back as soon as it is ready: holding a batch's answers
                # until the last one is done added the whole batch's time to every request
                # (p99 325 ms vs 110 ms at c=32, docs/results/serve-steps/hotpath.md).
                with contextlib.suppress(RuntimeError):  # that loop has closed meanwhile
                    loop.call_soon_threadsafe(_deliver, [done])
            if stopping:
                return
