"""The stall watchdog aborts an attempt that receives nothing, or too little, for a whole
window, and leaves alone one that keeps receiving or is only slowed by our own limit."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from progress_server.engine.watchdog import Stalled, StallWatchdog

WINDOW = 0.2


class Transfer:
    """An attempt that receives `step` bytes every 10 ms, watched as the downloader does."""

    def __init__(self, step: int) -> None:
        self.step = step
        self.received = 0

    async def run(
        self,
        seconds: float,
        min_speed_bps: float = 0.0,
        throttled: Callable[[], float] = lambda: 0.0,
    ) -> None:
        watchdog = StallWatchdog(WINDOW, min_speed_bps, lambda: self.received, throttled)
        async with watchdog:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                await asyncio.sleep(0.01)
                self.received += self.step


async def test_an_origin_that_sends_nothing_is_abandoned_after_the_window() -> None:
    started = time.monotonic()
    with pytest.raises(Stalled, match=r"^no data from the origin for 0\.2 s$"):
        await asyncio.create_task(Transfer(step=0).run(seconds=10))
    assert WINDOW <= time.monotonic() - started < 5


async def test_an_origin_that_keeps_sending_is_left_alone() -> None:
    transfer = Transfer(step=10_000)
    await asyncio.create_task(transfer.run(seconds=2.5 * WINDOW, min_speed_bps=50_000))
    assert transfer.received > 0


async def test_a_trickle_below_the_minimum_speed_is_abandoned() -> None:
    with pytest.raises(Stalled, match=r"^slower than 100 kB/s for 0\.2 s \(\d+\.\d kB/s\)$"):
        # 10 bytes per 10 ms: about 1 kB/s.
        await asyncio.create_task(Transfer(step=10).run(seconds=10, min_speed_bps=100_000))


async def test_time_asleep_under_our_own_limit_is_not_the_origins_fault() -> None:
    started = time.monotonic()
    transfer = Transfer(step=10)
    # The transfer spends its time asleep under our limit: its slowness is ours.
    await asyncio.create_task(
        transfer.run(
            seconds=2.5 * WINDOW,
            min_speed_bps=100_000,
            throttled=lambda: time.monotonic() - started,
        )
    )


async def test_a_pause_or_shutdown_still_arrives_as_a_cancel() -> None:
    attempt = asyncio.create_task(Transfer(step=0).run(seconds=10))
    await asyncio.sleep(WINDOW / 4)
    attempt.cancel()
    with pytest.raises(asyncio.CancelledError):
        await attempt
    # The watchdog's own task went with it.
    assert [t for t in asyncio.all_tasks() if t.get_name() == "stall-watchdog"] == []
