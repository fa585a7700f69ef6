"""Search batching: the index searches of concurrent requests as one FAISS call.

Under load, each recommend request used to run its own single-query FAISS search on its
own worker thread. An exact search over 1e5 items is one [1, d] x [d, n] product (~3 ms
on this project's CPU); 32 of them side by side cost 32 times that plus GIL contention
between the threads (bench/serve.py: 4 ms of server CPU per request alone, 10-17 ms at
concurrency 32). FAISS computes a [b, d] x [d, n] batch as one BLAS matrix product, whose
cost per query is a fraction of the single-query one.

``SearchBatcher`` is one thread that takes every search waiting in its queue, groups them
by index, and runs one ``DomainIndex.search`` per group. It never waits for a batch to
fill: with one request in flight the batch is that request (no added latency); batches
form only when requests queue up anyway. A request's result is the same top-k it would
get alone (the batch searches with the largest k and exclusion over-fetch of the group,
then each request keeps its own first k).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field

import numpy as np

from app.index import DomainIndex

log = logging.getLogger("micrec.batching")

Hits = list[tuple[str, float]]


@dataclass
class _Search:
    index: DomainIndex
    query: np.ndarray  # [d]
    k: int
    exclude: set[str]
    future: Future[Hits] = field(default_factory=Future)


class SearchBatcher:
    """Batches concurrent ``DomainIndex`` searches (see the module docstring).

    ``max_batch``: most searches in one FAISS call. ``search`` runs the search in the
    caller's thread when the batcher is not running (unit use, shutdown).
    """

    def __init__(self, *, max_batch: int = 64) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue[_Search | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self.batches = 0
        self.searches = 0

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self.running:
            return
        self._thread = threading.Thread(target=self._loop, name="micrec-search", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join(timeout)

    def search(self, index: DomainIndex, query: np.ndarray, k: int, exclude: set[str]) -> Hits:
        """Top-``k`` (id, score) of ``index`` for one [d] query, ``exclude`` left out."""
        if not self.running:
            return index.search(query.reshape(1, -1), k, exclude=[exclude])[0]
        job = _Search(index, np.asarray(query, dtype=np.float32).reshape(-1), k, exclude)
        self._queue.put(job)
        while True:
            try:
                return job.future.result(timeout=1.0)
            except FutureTimeout:
                # stopped between the check above and the put: nobody will run the job
                if not self.running and not job.future.done():
                    return index.search(query.reshape(1, -1), k, exclude=[exclude])[0]

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            stop = False
            while len(batch) < self.max_batch:
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    stop = True
                    break
                batch.append(job)
            self._run(batch)
            if stop:
                return

    def _run(self, batch: Sequence[_Search]) -> None:
        groups: dict[int, list[_Search]] = {}
        for job in batch:
            groups.setdefault(id(job.index), []).append(job)
        for jobs in groups.values():
            try:
                k = max(j.k for j in jobs)
                hits = jobs[0].index.search(
                    np.stack([j.query for j in jobs]), k, exclude=[j.exclude for j in jobs]
                )
            except Exception as err:  # delivered to every waiting request, never lost
                for j in jobs:
                    j.future.set_exception(err)
                continue
            for j, h in zip(jobs, hits, strict=True):
                j.future.set_result(h[: j.k])
        self.batches += 1
        self.searches += len(batch)
