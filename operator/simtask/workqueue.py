"""A work queue of keys with client-go's promises, in asyncio.

A key is processed by one worker at a time; a key added while it is processed is processed
again afterwards (the dirty set); a key added many times while it waits is processed once;
a key that keeps failing waits longer each time (per-key exponential backoff with a cap)
until it succeeds. Keys added as urgent go first, alternating with the others while both
wait, so neither starves. Depth
and wait are reported to the optional `QueueMetrics`.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Hashable
from typing import Protocol


class QueueMetrics(Protocol):
    """Where a queue reports: how many keys wait, and how long one waited."""

    def depth(self, n: int) -> None: ...

    def waited(self, seconds: float) -> None: ...


class WorkQueue:
    """Deduplicating, per-key serialised queue with delayed adds and per-key backoff."""

    def __init__(
        self,
        *,
        base_delay: float = 0.25,
        max_delay: float = 120.0,
        metrics: QueueMetrics | None = None,
    ) -> None:
        self._urgent: deque[Hashable] = deque()
        self._normal: deque[Hashable] = deque()
        #: One release per key put in a deque (a key may be in both: the first taken wins).
        self._ready = asyncio.Semaphore(0)
        #: Keys in the queue, with when they were added (for the wait metric).
        self._waiting: dict[Hashable, float] = {}
        self._dirty_urgent: set[Hashable] = set()
        self._last_urgent = False
        self._active: set[Hashable] = set()
        self._dirty: set[Hashable] = set()
        self._timers: dict[Hashable, asyncio.TimerHandle] = {}
        self._failures: dict[Hashable, int] = {}
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.metrics = metrics

    def add(self, key: Hashable, *, urgent: bool = False) -> None:
        """Process `key` soon (once, however often it is added before that); an urgent key
        goes before the others, even if it was already waiting among them."""
        if key in self._active:
            self._dirty.add(key)
            if urgent:
                self._dirty_urgent.add(key)
            return
        if key not in self._waiting:
            self._waiting[key] = time.monotonic()
            (self._urgent if urgent else self._normal).append(key)
            self._ready.release()
            if self.metrics is not None:
                self.metrics.depth(len(self._waiting))
        elif urgent:
            self._urgent.append(key)  # Also still in the normal line: taken once, here.
            self._ready.release()

    def add_after(self, key: Hashable, seconds: float) -> None:
        """Process `key` after `seconds` (the earliest of several such requests wins)."""
        if seconds <= 0:
            self.add(key)
            return
        loop = asyncio.get_running_loop()
        when = loop.time() + seconds
        timer = self._timers.get(key)
        if timer is not None and not timer.cancelled() and timer.when() <= when:
            return
        if timer is not None:
            timer.cancel()
        self._timers[key] = loop.call_at(when, self._fire, key)

    def add_rate_limited(self, key: Hashable) -> float:
        """`key` failed: process it again after a delay that doubles with each failure in a
        row (base_delay, 2x, 4x, ... up to max_delay). Returns the delay."""
        failures = self._failures.get(key, 0)
        self._failures[key] = failures + 1
        delay = min(self.base_delay * 2.0**failures, self.max_delay)
        self.add_after(key, delay)
        return delay

    def failures(self, key: Hashable) -> int:
        """How many times in a row `key` failed."""
        return self._failures.get(key, 0)

    def succeeded(self, key: Hashable) -> None:
        """`key` was processed without error: its backoff starts over."""
        self._failures.pop(key, None)

    def _fire(self, key: Hashable) -> None:
        self._timers.pop(key, None)
        self.add(key)

    async def get(self) -> Hashable:
        """The next key to process; call done(key) when finished."""
        while True:
            await self._ready.acquire()
            # Urgent first, but never two in a row while others wait: neither line starves.
            take_urgent = bool(self._urgent) and (not self._normal or not self._last_urgent)
            key = self._urgent.popleft() if take_urgent else self._normal.popleft()
            self._last_urgent = take_urgent
            if key in self._waiting:
                break  # Else: a second entry of a key already taken.
        added = self._waiting.pop(key)
        self._active.add(key)
        if self.metrics is not None:
            self.metrics.depth(len(self._waiting))
            self.metrics.waited(time.monotonic() - added)
        return key

    def done(self, key: Hashable) -> None:
        """Finish `key`; if it was added meanwhile, queue it again."""
        self._active.discard(key)
        if key in self._dirty:
            self._dirty.discard(key)
            urgent = key in self._dirty_urgent
            self._dirty_urgent.discard(key)
            self.add(key, urgent=urgent)

    def forget(self, key: Hashable) -> None:
        """The object is gone: drop its timer and its failure count."""
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        self._failures.pop(key, None)

    def processing(self, key: Hashable) -> bool:
        return key in self._active

    def __len__(self) -> int:
        return len(self._waiting)
