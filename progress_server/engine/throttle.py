"""Speed limits: a token bucket that makes a transfer sleep instead of spinning.

A reader takes the bytes it just received; when the bucket runs into debt, the reader
sleeps exactly until the debt is paid back, once. Readers sharing one bucket (the global
limit) queue up naturally: each one's debt includes what the others took before it.

The limits hold from the first byte: a bucket saves up no burst by default (a reader pays
for each slice as it takes it), because a saved-up 0.1 s at the start of every transfer,
every retried attempt and whenever the server's shared bucket sat idle is what made the
first second's readings overshoot a limit by half. Bytes count as received once paid for
(engine/connection.py), so a reading never runs a slice ahead of the limit either.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

# Readers under a limit take bytes in slices this long in time, so no single sleep is long
# enough to look like a stall or to make a pause wait.
SLICE_SECONDS = 0.1
_MIN_SLICE = 4096


def mbps_to_bps(mbps: float) -> float:
    """Decimal megabytes per second, the unit of `speed_mbps`, to bytes per second."""
    return mbps * 1_000_000


class TokenBucket:
    def __init__(
        self,
        rate_bps: float,
        burst_seconds: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate_bps <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate_bps
        self.capacity = max(rate_bps * burst_seconds, _MIN_SLICE)
        self._clock = clock
        self._tokens = self.capacity
        self._updated = clock()

    @property
    def slice_bytes(self) -> int:
        """How many bytes a reader should take at a time under this limit."""
        return max(int(self.rate * SLICE_SECONDS), _MIN_SLICE)

    def reserve(self, nbytes: int) -> float:
        """Take `nbytes` now; returns how long the taker must wait to stay under the rate."""
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._updated) * self.rate)
        self._updated = now
        self._tokens -= nbytes
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate


class Throttle:
    """The buckets one transfer is subject to: the global one, its own, or both."""

    def __init__(self, buckets: list[TokenBucket]) -> None:
        self.buckets = buckets
        self.waited_seconds = 0.0

    @property
    def limited(self) -> bool:
        return bool(self.buckets)

    @property
    def slice_bytes(self) -> int:
        return min(b.slice_bytes for b in self.buckets)

    @property
    def rate_bps(self) -> float | None:
        return min((b.rate for b in self.buckets), default=None)

    async def take(self, nbytes: int) -> None:
        # Every bucket is charged; the reader waits for the slowest one only.
        wait = max(bucket.reserve(nbytes) for bucket in self.buckets)
        if wait > 0:
            self.waited_seconds += wait
            await asyncio.sleep(wait)
