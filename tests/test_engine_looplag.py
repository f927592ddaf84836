"""The loop-lag monitor sees a blocked event loop, and the app runs one."""

from __future__ import annotations

import asyncio
import time

from progress_server.appkeys import LOOP_LAG
from progress_server.looplag import LoopLagMonitor
from tests.apiclient import Api, eventually


async def test_a_blocked_loop_shows_up_as_lag() -> None:
    monitor = LoopLagMonitor(tick=0.01)
    monitor.start()
    try:
        await eventually(lambda: _sampled(monitor, 3), 10)
        # Blocking on purpose: what a synchronous write of a big chunk would do.
        time.sleep(0.3)  # noqa: ASYNC251
        target = monitor.samples + 2
        await eventually(lambda: _sampled(monitor, target), 10)
    finally:
        await monitor.stop()
    assert monitor.worst_seconds >= 0.25
    assert monitor.worst_recent_seconds() >= 0.25


async def test_lag_older_than_a_minute_leaves_the_recent_figure() -> None:
    monitor = LoopLagMonitor()
    monitor.record(0.4, now=1000.0)
    monitor.record(0.01, now=1030.0)
    assert monitor.worst_recent_seconds(now=1031.0) == 0.4
    monitor.record(0.02, now=1070.0)
    assert monitor.worst_recent_seconds(now=1070.5) == 0.02
    assert monitor.worst_seconds == 0.4


async def test_the_app_measures_its_loop(api: Api) -> None:
    monitor = api.client.app[LOOP_LAG]
    await eventually(lambda: _sampled(monitor, 3), 10)


async def _sampled(monitor: LoopLagMonitor, count: int) -> bool:
    await asyncio.sleep(0)
    return monitor.samples >= count
