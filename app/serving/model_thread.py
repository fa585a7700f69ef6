"""One dedicated thread per worker for the model work of recommends (``model_thread``).

The alternative to running the model work inline on the event loop: the loop hands each
request's work to this thread and awaits it (:meth:`ModelThread.run_batched`). The thread
takes *every* job waiting when it wakes (one queue wake-up per batch); when idle a job runs
at once (no added wait). Jobs that wait together and name the same batch function are
computed by one call of it (up to ``batch_max`` at a time; the recommend path: one fold-in
and one index search for all of them, app/serving/answering.py), and each answer is handed back as
soon as it is ready.

Inline vs this thread: docs/results/serve-steps/hotpath.md; batched vs one at a time:
docs/results/serve-steps/batch.md.

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
A = TypeVar("A")

BatchFn = Callable[[list[Any]], list[Any]]
"""Computes a list of arguments at once; returns one result or Exception per argument."""

_Job = tuple[Callable[..., Any], asyncio.Future[Any], asyncio.AbstractEventLoop, Any]
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
    """Started by the first :meth:`run_batched`; :meth:`stop` ends it."""

    def __init__(self, name: str = "micrec-model", count: int = 1, batch_max: int = 32) -> None:
        if count < 1:
            raise ValueError(f"count must be >= 1, got {count}")
        if batch_max < 1:
            raise ValueError(f"batch_max must be >= 1, got {batch_max}")
        self.name = name
        self.count = count
        self.batch_max = batch_max
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self.batches = 0
        self.jobs = 0

    def _thread_name(self, i: int) -> str:
        return self.name if self.count == 1 else f"{self.name}-{i}"

    async def run_batched(self, fn: Callable[[list[A]], list[T | Exception]], arg: A) -> T:
        """``fn([.., arg, ..])`` on the model thread, with the other waiting jobs of ``fn``;
        this job's element of the result here (raised if it is an Exception)."""
        return await self._submit(fn, arg)

    async def _submit(self, fn: Callable[..., Any], arg: Any) -> Any:
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
        future: asyncio.Future[Any] = loop.create_future()
        self._jobs.put((fn, future, loop, arg))
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
            for group in self._groups(batch):
                self._compute(group)
            if stopping:
                return

    def _groups(self, batch: list[_Job]) -> list[list[_Job]]:
        """The batch in arrival order of each group's first job: the jobs of one batch
        function together (in pieces of ``batch_max``)."""
        groups: list[list[_Job]] = []
        open_groups: dict[Callable[..., Any], list[_Job]] = {}
        for job in batch:
            fn = job[0]
            # keyed by the function itself: each access of a bound method makes a new
            # object, equal (and hashing equal) to the others of the same instance
            group = open_groups.get(fn)
            if group is None or len(group) >= self.batch_max:
                group = open_groups[fn] = []
                groups.append(group)
            group.append(job)
        return groups

    @staticmethod
    def _compute(group: list[_Job]) -> None:
        fn = group[0][0]
        done: list[_Done]
        try:
            results = fn([job[3] for job in group])
            if len(results) != len(group):
                raise RuntimeError(f"{len(results)} results for {len(group)} jobs")
            done = [
                (job[1], None, r) if isinstance(r, Exception) else (job[1], r, None)
                for job, r in zip(group, results, strict=True)
            ]
        except BaseException as err:  # handed to the awaiting requests
            done = [(job[1], None, err) for job in group]
        # Each answer goes back as soon as it is ready: holding a batch's answers until the
        # last one is done added the whole batch's time to every request (p99 325 ms vs
        # 110 ms at c=32, docs/results/serve-steps/hotpath.md).
        for job, d in zip(group, done, strict=True):
            with contextlib.suppress(RuntimeError):  # that loop has closed meanwhile
                job[2].call_soon_threadsafe(_deliver, [d])
