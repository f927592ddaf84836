"""Speed limits: a token bucket lets a burst through, then makes readers wait exactly long
enough to stay under the rate; a transfer under several limits waits for the slowest."""

from __future__ import annotations

import asyncio
import time

import pytest

from progress_server.engine.throttle import SLICE_SECONDS, Throttle, TokenBucket, mbps_to_bps


class Clock:
    """Time that moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_rate_must_be_positive() -> None:
    with pytest.raises(ValueError):
        TokenBucket(0)
    with pytest.raises(ValueError):
        TokenBucket(-5)


def test_megabytes_are_decimal() -> None:
    assert mbps_to_bps(2.5) == 2_500_000


def test_a_burst_passes_then_the_debt_is_paid_in_time() -> None:
    clock = Clock()
    bucket = TokenBucket(1_000_000, burst_seconds=0.1, clock=clock)
    # The first 100 kB (0.1 s at 1 MB/s) pass at once.
    assert bucket.reserve(100_000) == 0.0
    # The next 50 kB are owed: 0.05 s at 1 MB/s.
    assert bucket.reserve(50_000) == pytest.approx(0.05)
    # A second reader queues behind the first one's debt.
    assert bucket.reserve(50_000) == pytest.approx(0.10)
    clock.now += 0.10
    assert bucket.reserve(0) == pytest.approx(0.0)


def test_idle_time_refills_no_more_than_one_burst() -> None:
    clock = Clock()
    bucket = TokenBucket(1_000_000, burst_seconds=0.1, clock=clock)
    bucket.reserve(100_000)
    clock.now += 60.0
    # A minute of silence buys one burst, not 60 MB.
    assert bucket.reserve(100_000) == 0.0
    assert bucket.reserve(100_000) == pytest.approx(0.1)


def test_slices_last_a_tenth_of_a_second_but_are_never_tiny() -> None:
    assert TokenBucket(10_000_000).slice_bytes == int(10_000_000 * SLICE_SECONDS)
    assert TokenBucket(1_000).slice_bytes == 4096
    # A very low limit still lets one slice through without waiting.
    assert TokenBucket(1_000).reserve(4096) == 0.0


def test_an_unlimited_throttle_says_so() -> None:
    throttle = Throttle([])
    assert not throttle.limited
    assert throttle.rate_bps is None


def test_a_transfer_under_two_limits_follows_the_lower_one() -> None:
    throttle = Throttle([TokenBucket(10_000_000), TokenBucket(500_000)])
    assert throttle.limited
    assert throttle.rate_bps == 500_000
    assert throttle.slice_bytes == 50_000


async def test_taking_bytes_sleeps_until_they_are_paid_for() -> None:
    throttle = Throttle([TokenBucket(2_000_000, burst_seconds=0.1)])
    started = time.monotonic()
    # 200 kB of burst, then 200 kB more at 2 MB/s: 0.1 s of waiting in all.
    for _ in range(20):
        await throttle.take(20_000)
    # However slow the machine, 400 kB cannot get through faster than that; time lost
    # elsewhere refills the bucket, so the sleeping itself may be shorter, never longer.
    assert time.monotonic() - started >= 0.09
    assert 0 < throttle.waited_seconds <= 0.1 + 1e-6


async def test_readers_sharing_a_limit_share_its_rate() -> None:
    shared = TokenBucket(2_000_000, burst_seconds=0.1)
    readers = [Throttle([shared]), Throttle([shared])]

    async def read(throttle: Throttle) -> None:
        for _ in range(10):
            await throttle.take(20_000)

    started = time.monotonic()
    await asyncio.gather(*(read(t) for t in readers))
    # 400 kB together, 200 kB of it beyond the burst: 0.1 s at 2 MB/s, whoever reads it.
    assert time.monotonic() - started >= 0.09
    assert sum(t.waited_seconds for t in readers) > 0


async def test_every_limit_is_charged_even_when_another_is_slower() -> None:
    clock = Clock()
    shared = TokenBucket(1_000_000, burst_seconds=0.1, clock=clock)
    own = TokenBucket(500_000, burst_seconds=0.1, clock=clock)
    throttle = Throttle([shared, own])
    # The own limit is the slower: 50 kB beyond its burst at 500 kB/s.
    await throttle.take(100_000)
    assert throttle.waited_seconds == pytest.approx(0.1)
    # The transfer's bytes count against the shared limit too: the next reader owes.
    assert shared.reserve(50_000) == pytest.approx(0.05)
