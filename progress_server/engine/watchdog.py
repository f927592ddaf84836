"""Stall detection for one attempt, at no cost per chunk.

The transfer only counts bytes, which it does anyway. A watchdog task samples that count
a few times per stall window and aborts the attempt (by cancelling it, the way
`asyncio.timeout` does) when no byte arrived for the whole window, or when the average
speed over a full window stayed below the minimum. Time the transfer spent asleep under
our own speed limit does not count against the origin.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from types import TracebackType


class Stalled(Exception):
    """The attempt was aborted by the watchdog; `str()` says why."""


class StallWatchdog:
    def __init__(
        self,
        stall_timeout: float,
        min_speed_bps: float,
        received: Callable[[], int],
        throttled_seconds: Callable[[], float] = lambda: 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stall_timeout = stall_timeout
        self.min_speed_bps = min_speed_bps
        self._received = received
        self._throttled = throttled_seconds
        self._clock = clock
        self.tick = min(1.0, stall_timeout / 4)
        self.reason: str | None = None
        self._victim: asyncio.Task[object] | None = None
        self._watcher: asyncio.Task[None] | None = None

    async def __aenter__(self) -> StallWatchdog:
        self._victim = asyncio.current_task()
        self._watcher = asyncio.create_task(self._watch(), name="stall-watchdog")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        if self.reason is not None and exc_type is asyncio.CancelledError:
            assert self._victim is not None
            # Only our own cancel is turned into Stalled; a pause or shutdown that
            # arrived as well still goes through as a cancel.
            if self._victim.uncancel() == 0:
                raise Stalled(self.reason) from exc

    async def _watch(self) -> None:
        start = self._clock()
        # (time, bytes received, seconds throttled) samples covering one window.
        samples: deque[tuple[float, int, float]] = deque([(start, self._received(), 0.0)])
        last_change = start
        while True:
            await asyncio.sleep(self.tick)
            now, count, throttled = self._clock(), self._received(), self._throttled()
            if count != samples[-1][1]:
                last_change = now
            samples.append((now, count, throttled))
            while len(samples) > 2 and samples[1][0] <= now - self.stall_timeout:
                samples.popleft()
            reason = self._verdict(now, last_change, samples)
            if reason is not None:
                self.reason = reason
                assert self._victim is not None
                self._victim.cancel()
                return

    def _verdict(
        self, now: float, last_change: float, samples: deque[tuple[float, int, float]]
    ) -> str | None:
        if now - last_change >= self.stall_timeout:
            return f"no data from the origin for {self.stall_timeout:g} s"
        base_time, base_count, base_throttled = samples[0]
        elapsed = now - base_time
        if self.min_speed_bps <= 0 or elapsed < self.stall_timeout:
            return None
        _, count, throttled = samples[-1]
        if throttled > base_throttled:
            return None
        speed = (count - base_count) / elapsed
        if speed < self.min_speed_bps:
            return (
                f"slower than {self.min_speed_bps / 1000:g} kB/s "
                f"for {self.stall_timeout:g} s ({speed / 1000:.1f} kB/s)"
            )
        return None
