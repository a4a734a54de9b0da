"""A work queue of task keys: each key is processed by one worker at a time, never lost.

A key added while it is being processed is processed again afterwards; a key added many
times while it waits is processed once (the controller-runtime work queue, in asyncio).
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable


class WorkQueue:
    """Deduplicating, per-key serialised queue with delayed adds."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[Hashable] = asyncio.Queue()
        self._waiting: set[Hashable] = set()
        self._active: set[Hashable] = set()
        self._dirty: set[Hashable] = set()
        self._timers: dict[Hashable, asyncio.TimerHandle] = {}

    def add(self, key: Hashable) -> None:
        """Process `key` soon (once, however often it is added before that)."""
        if key in self._active:
            self._dirty.add(key)
        elif key not in self._waiting:
            self._waiting.add(key)
            self._queue.put_nowait(key)

    def add_after(self, key: Hashable, seconds: float) -> None:
        """Process `key` after `seconds` (the earliest of several such requests wins)."""
        loop = asyncio.get_running_loop()
        when = loop.time() + seconds
        timer = self._timers.get(key)
        if timer is not None and not timer.cancelled() and timer.when() <= when:
            return
        if timer is not None:
            timer.cancel()
        self._timers[key] = loop.call_at(when, self._fire, key)

    def _fire(self, key: Hashable) -> None:
        self._timers.pop(key, None)
        self.add(key)

    async def get(self) -> Hashable:
        """The next key to process; call done(key) when finished."""
        key = await self._queue.get()
        self._waiting.discard(key)
        self._active.add(key)
        return key

    def done(self, key: Hashable) -> None:
        """Finish `key`; if it was added meanwhile, queue it again."""
        self._active.discard(key)
        if key in self._dirty:
            self._dirty.discard(key)
            self.add(key)

    def forget(self, key: Hashable) -> None:
        """Drop a pending timer for `key` (the object is gone)."""
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()

    def __len__(self) -> int:
        return len(self._waiting)
