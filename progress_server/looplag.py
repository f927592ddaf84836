"""How long the event loop was blocked: the proof that disk and hashing stay off it.

A background task asks to sleep for a short tick and measures how much later it woke up.
Anything that holds the loop (a synchronous write, a big hash, a slow query) shows up as
that oversleep. The worst figure since start and over the last minute are kept for logs
and metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque

log = logging.getLogger(__name__)

TICK_SECONDS = 0.05
WINDOW_SECONDS = 60.0


class LoopLagMonitor:
    def __init__(self, tick: float = TICK_SECONDS) -> None:
        self.tick = tick
        self.worst_seconds = 0.0
        self.samples = 0
        # (second, worst lag in that second): at most WINDOW_SECONDS entries.
        self._recent: deque[tuple[int, float]] = deque()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="loop-lag-monitor")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        log.info("event loop lag: worst %.1f ms", self.worst_seconds * 1000)

    async def _run(self) -> None:
        clock = time.monotonic
        while True:
            before = clock()
            await asyncio.sleep(self.tick)
            now = clock()
            self.record(max(now - before - self.tick, 0.0), now)

    def record(self, lag: float, now: float) -> None:
        self.samples += 1
        self.worst_seconds = max(self.worst_seconds, lag)
        second = int(now)
        if self._recent and self._recent[-1][0] == second:
            if lag > self._recent[-1][1]:
                self._recent[-1] = (second, lag)
        else:
            self._recent.append((second, lag))
        while self._recent and self._recent[0][0] <= now - WINDOW_SECONDS:
            self._recent.popleft()

    def worst_recent_seconds(self, now: float | None = None) -> float:
        """The worst lag over the last minute."""
        cutoff = (time.monotonic() if now is None else now) - WINDOW_SECONDS
        return max((lag for second, lag in self._recent if second > cutoff), default=0.0)
