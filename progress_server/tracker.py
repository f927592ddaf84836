"""ProgressTracker: byte counts in, smoothed speed, ETA and a throttle out."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from progress_server.models import Progress

# The contract allows a window of at most 2 s; 1 s follows changes quickly while a steady
# origin still reads steady (a chunk more or less in a 1 s window is ~1 % at 64 KiB chunks).
SPEED_WINDOW_SECONDS = 1.0


class ProgressTracker:
    """Speed is bytes received in the last second over the time they took (a sliding window).

    An average over the window, unlike the rate of the last chunk, does not jump with every
    read size, and it decays to zero on its own when the origin stalls.
    """

    def __init__(
        self,
        total_bytes: int | None,
        downloaded_bytes: int = 0,
        interval: float = 0.25,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.total_bytes = total_bytes
        self.downloaded_bytes = downloaded_bytes
        self.interval = interval
        self._clock = clock
        self._wall_clock = wall_clock
        now = clock()
        self._samples: deque[tuple[float, int]] = deque([(now, downloaded_bytes)])
        # The timestamp the last progress event carries. The interval is kept between the
        # timestamps themselves: a mark on another clock, read a moment before or after the
        # timestamp (a busy machine, a GC pause between the two), let two events' timestamps
        # come closer than the interval.
        self._last_emit = float("-inf")
        self.last_byte_at = now

    def restart(self, downloaded_bytes: int, total_bytes: int | None) -> None:
        """A new attempt or a restart from zero: the window begins again."""
        now = self._clock()
        self.downloaded_bytes = downloaded_bytes
        self.total_bytes = total_bytes
        self._samples = deque([(now, downloaded_bytes)])
        self.last_byte_at = now

    def add(self, nbytes: int) -> None:
        now = self._clock()
        self.downloaded_bytes += nbytes
        self._samples.append((now, self.downloaded_bytes))
        self.last_byte_at = now
        self._trim(now)

    def _trim(self, now: float) -> None:
        # Keep exactly one sample at or before the window's start as its base.
        cutoff = now - SPEED_WINDOW_SECONDS
        while len(self._samples) > 1 and self._samples[1][0] <= cutoff:
            self._samples.popleft()

    def speed_bps(self) -> float:
        now = self._clock()
        self._trim(now)
        base_time, base_bytes = self._samples[0]
        elapsed = now - base_time
        if elapsed <= 0:
            return 0.0
        return (self.downloaded_bytes - base_bytes) / elapsed

    def snapshot(self) -> Progress:
        return Progress(self.downloaded_bytes, self.total_bytes, self.speed_bps())

    def due(self) -> bool:
        """True when a progress event may be sent now."""
        return self.until_due() == 0.0

    def until_due(self) -> float:
        """Seconds until a progress event may be sent (0: now)."""
        now = self._wall_clock()
        if now < self._last_emit:
            # The clock was set back: waiting for it to catch up could take hours.
            return 0.0
        return max(0.0, self._last_emit + self.interval - now)

    def mark_emitted(self) -> float:
        """Count a progress event as sent now; returns its timestamp (Unix seconds)."""
        self._last_emit = self._wall_clock()
        return self._last_emit

    def seconds_since_last_byte(self) -> float:
        return self._clock() - self.last_byte_at
