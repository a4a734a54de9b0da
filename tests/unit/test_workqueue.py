"""The work queue: one worker per key, nothing lost, per-key backoff, metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Hashable

import pytest

from simtask.workqueue import WorkQueue


class Recorder:
    def __init__(self) -> None:
        self.depths: list[int] = []
        self.waits: list[float] = []

    def depth(self, n: int) -> None:
        self.depths.append(n)

    def waited(self, seconds: float) -> None:
        self.waits.append(seconds)


def run(coro: object) -> None:
    asyncio.run(coro)  # type: ignore[arg-type]


def test_a_key_added_many_times_while_waiting_is_processed_once() -> None:
    async def main() -> None:
        q = WorkQueue()
        for _ in range(5):
            q.add("a")
        q.add("b")
        assert len(q) == 2
        assert await q.get() == "a"
        assert await q.get() == "b"
        assert len(q) == 0

    run(main())


def test_an_add_while_processing_is_not_lost_and_not_concurrent() -> None:
    async def main() -> None:
        q = WorkQueue()
        q.add("a")
        key = await q.get()
        q.add("a")  # Changed again while a worker has it: not handed to a second worker.
        assert len(q) == 0 and q.processing("a")
        q.done(key)
        assert len(q) == 1  # ...but processed again afterwards.
        assert await q.get() == "a"

    run(main())


def test_two_workers_never_hold_the_same_key() -> None:
    async def main() -> None:
        q = WorkQueue()
        active: set[Hashable] = set()
        overlaps = 0
        processed = 0

        async def worker() -> None:
            nonlocal overlaps, processed
            while True:
                key = await q.get()
                if key in active:
                    overlaps += 1
                active.add(key)
                await asyncio.sleep(0.001)
                if processed < 200:
                    q.add(key)  # Every pass makes another event for its own key.
                processed += 1
                active.discard(key)
                q.done(key)

        workers = [asyncio.create_task(worker()) for _ in range(8)]
        for i in range(3):
            q.add(f"k{i}")
        while processed < 200:  # noqa: ASYNC110 - the workers' progress is the condition
            await asyncio.sleep(0.01)
        for w in workers:
            w.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        assert overlaps == 0

    run(main())


def test_failures_back_off_exponentially_per_key_with_a_cap() -> None:
    async def main() -> None:
        q = WorkQueue(base_delay=0.01, max_delay=0.05)
        delays = [q.add_rate_limited("a") for _ in range(5)]
        assert delays == pytest.approx([0.01, 0.02, 0.04, 0.05, 0.05])
        assert q.add_rate_limited("b") == pytest.approx(0.01), "backoff is per key"
        assert q.failures("a") == 5
        q.succeeded("a")
        assert q.failures("a") == 0
        assert q.add_rate_limited("a") == pytest.approx(0.01)

    run(main())


def test_delayed_adds_keep_the_earliest_and_fire() -> None:
    async def main() -> None:
        q = WorkQueue()
        q.add_after("a", 10)
        q.add_after("a", 0.02)
        q.add_after("a", 5)
        assert len(q) == 0
        key = await asyncio.wait_for(q.get(), timeout=1)
        assert key == "a"

    run(main())


def test_forget_drops_timer_and_failures() -> None:
    async def main() -> None:
        q = WorkQueue(base_delay=0.02)
        q.add_rate_limited("a")
        q.forget("a")
        assert q.failures("a") == 0
        await asyncio.sleep(0.05)
        assert len(q) == 0

    run(main())


def test_depth_and_wait_are_reported() -> None:
    async def main() -> None:
        rec = Recorder()
        q = WorkQueue(metrics=rec)
        q.add("a")
        q.add("b")
        await asyncio.sleep(0.01)
        await q.get()
        assert rec.depths == [1, 2, 1]
        assert len(rec.waits) == 1 and rec.waits[0] >= 0.005

    run(main())


def test_urgent_keys_go_first_and_are_taken_once() -> None:
    async def main() -> None:
        q = WorkQueue()
        for key in ("new-1", "new-2", "running"):
            q.add(key)
        q.add("pod-event", urgent=True)
        q.add("running", urgent=True)  # Already waiting: promoted, not duplicated.
        assert len(q) == 4
        order = [await q.get() for _ in range(4)]
        # Urgent first, then the lines alternate while both have keys: neither starves.
        assert order == ["pod-event", "new-1", "running", "new-2"]
        assert len(q) == 0
        # The stale second entry of "running" is skipped, not handed out again.
        q.add("later")
        assert await asyncio.wait_for(q.get(), timeout=1) == "later"

    run(main())


def test_an_urgent_add_while_processing_stays_urgent() -> None:
    async def main() -> None:
        q = WorkQueue()
        q.add("a")
        key = await q.get()
        q.add("b")
        q.add("a", urgent=True)
        q.done(key)
        assert [await q.get() for _ in range(2)] == ["a", "b"]

    run(main())
