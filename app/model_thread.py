"""One dedicated thread per worker for the model work of recommends (``model_thread``).

The alternative to running the model work inline on the event loop: the loop hands each
request's work to this thread and awaits it. The thread takes *every* job waiting when it
wakes as one batch and hands all the results back to each loop with one wake-up, so under
load the cost of crossing threads is paid per batch, not per request; when idle a job runs
at once (no added wait). docs/results/serve-steps/ has both variants measured.
"""

from __future__ import annotations

import asyncio
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
    def __init__(self, name: str = "micrec-model") -> None:
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        self.batches = 0
        self.jobs = 0

    async def run(self, fn: Callable[[], T]) -> T:
        """``fn()`` on the model thread; its result (or exception) here."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.put((fn, future, loop))
        return await future

    def _run(self) -> None:
        while True:
            batch = [self._jobs.get()]
            while True:
                try:
                    batch.append(self._jobs.get_nowait())
                except queue.Empty:
                    break
            self.batches += 1
            self.jobs += len(batch)
            by_loop: dict[asyncio.AbstractEventLoop, list[_Done]] = {}
            for fn, future, loop in batch:
                try:
                    done: _Done = (future, fn(), None)
                except BaseException as err:  # handed to the awaiting request
                    done = (future, None, err)
                by_loop.setdefault(loop, []).append(done)
            for loop, results in by_loop.items():
                if not loop.is_closed():
                    loop.call_soon_threadsafe(_deliver, results)
