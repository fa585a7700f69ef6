"""The model thread (app/serving/model_thread.py): results, errors, batching, stop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import TypeVar

import pytest

from app.serving.model_thread import ModelThread

T = TypeVar("T")


async def one(mt: ModelThread, fn: Callable[[], T]) -> T:
    """``fn()`` as a job of its own batch function (a new one per call: never batched with
    another job)."""

    def alone(args: list[None]) -> list[T]:
        return [fn() for _ in args]

    return await mt.run_batched(alone, None)


def test_results_errors_and_the_thread_it_runs_on() -> None:
    mt = ModelThread()

    def boom() -> None:
        raise ValueError("bad")

    async def go() -> None:
        assert await one(mt, lambda: 2 + 2) == 4
        assert await one(mt, lambda: threading.current_thread().name) == "micrec-model"
        with pytest.raises(ValueError, match="bad"):
            await one(mt, boom)

    asyncio.run(go())
    asyncio.run(go())  # another event loop later: still delivered
    mt.stop()
    assert not any(t.name == "micrec-model" for t in threading.enumerate())


def test_waiting_jobs_run_as_one_batch() -> None:
    mt = ModelThread()
    gate = threading.Event()

    async def go() -> list[int]:
        first = asyncio.ensure_future(one(mt, lambda: gate.wait(10) and 0))
        await asyncio.sleep(0.05)  # the thread is busy with the first job
        rest = [asyncio.ensure_future(one(mt, lambda k=k: k)) for k in range(1, 6)]
        await asyncio.sleep(0.05)
        gate.set()
        return list(await asyncio.gather(first, *rest))

    assert asyncio.run(go()) == [0, 1, 2, 3, 4, 5]
    assert mt.jobs == 6 and mt.batches == 2  # the five waiting jobs were taken at once
    mt.stop()


def test_several_threads_run_waiting_jobs_at_the_same_time() -> None:
    mt = ModelThread(count=2)
    both = threading.Barrier(2, timeout=10)  # passes only if two jobs run at once

    def job() -> str:
        both.wait()
        return threading.current_thread().name

    async def go() -> list[str]:
        return list(await asyncio.gather(one(mt, job), one(mt, job)))

    assert sorted(asyncio.run(go())) == ["micrec-model-0", "micrec-model-1"]
    mt.stop()
    assert not any(t.name.startswith("micrec-model") for t in threading.enumerate())
    with pytest.raises(ValueError, match="count must be >= 1"):
        ModelThread(count=0)


def test_waiting_jobs_of_one_batch_function_are_computed_by_one_call() -> None:
    """run_batched jobs that wait together go to one call of their batch function (in
    pieces of batch_max); an Exception in the result is raised for that job alone; jobs of
    another batch function keep their own calls."""
    mt = ModelThread(batch_max=3)
    gate = threading.Event()
    calls: list[list[int]] = []

    class Doubler:
        def double(self, args: list[int]) -> list[int | Exception]:
            calls.append(list(args))
            return [ValueError(f"odd {a}") if a == 5 else 2 * a for a in args]

    doubler = Doubler()

    async def go() -> list[object]:
        first = asyncio.ensure_future(one(mt, lambda: gate.wait(10) and 0))
        await asyncio.sleep(0.05)  # the thread is busy with the first job
        # a bound method, as the service passes it: a new object at each access
        rest = [asyncio.ensure_future(mt.run_batched(doubler.double, k)) for k in range(1, 6)]
        single = asyncio.ensure_future(one(mt, lambda: "alone"))
        await asyncio.sleep(0.05)
        gate.set()
        return list(await asyncio.gather(first, *rest, single, return_exceptions=True))

    out = asyncio.run(go())
    assert out[:5] == [0, 2, 4, 6, 8] and out[6] == "alone"
    assert isinstance(out[5], ValueError) and str(out[5]) == "odd 5"
    assert calls == [[1, 2, 3], [4, 5]]  # batch_max=3
    mt.stop()
    with pytest.raises(ValueError, match="batch_max must be >= 1"):
        ModelThread(batch_max=0)


def test_a_batch_function_that_raises_fails_each_of_its_jobs() -> None:
    mt = ModelThread()

    def broken(args: list[int]) -> list[int]:
        raise RuntimeError("batch failed")

    def short(args: list[int]) -> list[int]:
        return []

    async def go() -> None:
        with pytest.raises(RuntimeError, match="batch failed"):
            await mt.run_batched(broken, 1)
        with pytest.raises(RuntimeError, match="0 results for 1 jobs"):
            await mt.run_batched(short, 1)

    asyncio.run(go())
    mt.stop()
