"""The batch grid: when a batch-mode socket may send its next batch, on instants shared by
every socket with the same `batch_ms`, so that sockets in step send together.

Instants are multiples of `batch_ms` on the loop's clock, and a socket sends at most one
batch per instant, never before the instant after its previous batch's: at most one batch
per `batch_ms` (a batch that went out late, on a busy loop, may be followed by the next one
on time). After a quiet spell the next batch goes at once and counts as sent at the next
instant of the grid, so the one after it is still at least `batch_ms` away.
"""

from __future__ import annotations

import asyncio
import math

# Keeps float noise from skipping a point of the grid.
_EPSILON = 1e-9


def next_slot(last_slot: float, step: float, now: float) -> tuple[float, float]:
    """`(slot, at)`: the grid instant the next batch counts as, and when it may go
    (`at <= now`: at once). `last_slot` is the instant of the previous batch (0: none)."""
    if last_slot:
        at = math.ceil((last_slot + step) / step - _EPSILON) * step
        if at > now:
            return at, at
        if now - at < step:
            return at, now  # this batch's instant has come (or just passed): go
    return math.ceil(now / step - _EPSILON) * step, now


def may_send(last_slot: float, step: float, slot: float) -> bool:
    """Whether a socket whose last batch was at `last_slot` may send one at `slot`."""
    return not last_slot or last_slot + step <= slot + _EPSILON


class Ticks:
    """Futures resolved at instants of the grid: one timer per instant, however many
    sockets wait for it."""

    def __init__(self) -> None:
        self._waiters: dict[float, list[asyncio.Future[None]]] = {}

    def at(self, when: float) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        waiters = self._waiters.get(when)
        if waiters is None:
            waiters = self._waiters[when] = []
            loop.call_at(when, self._fire, when)
        waiters.append(waiter)
        return waiter

    def _fire(self, when: float) -> None:
        for waiter in self._waiters.pop(when, ()):
            if not waiter.done():
                waiter.set_result(None)
