"""ProgressTracker: smoothed speed, the ETA it implies, and the progress throttle.

The tracker takes its clock as a parameter, so these tests drive time by hand: a steady
origin is simulated exactly, with no sleeping and no timing flakiness.
"""

from __future__ import annotations

from progress_server.models import Progress
from progress_server.tracker import ProgressTracker


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def feed(tracker: ProgressTracker, clock: Clock, rate: float, seconds: float, chunk: int) -> None:
    """Deliver `chunk`-byte reads at `rate` bytes/s for `seconds`."""
    step = chunk / rate
    for _ in range(round(seconds / step)):
        clock.now += step
        tracker.add(chunk)


def test_steady_4mb_per_second_reads_4_0() -> None:
    clock = Clock()
    tracker = ProgressTracker(100_000_000, clock=clock)
    feed(tracker, clock, 4_000_000, 3.0, 65536)
    assert tracker.snapshot().speed_mbps == 4.0


def test_speed_ignores_the_size_of_the_last_chunk() -> None:
    clock = Clock()
    tracker = ProgressTracker(None, clock=clock)
    feed(tracker, clock, 2_000_000, 2.0, 16384)
    # One burst: a big read that arrives right after a small one.
    clock.now += 0.001
    tracker.add(1_000_000)
    assert tracker.snapshot().speed_mbps < 3.5


def test_speed_follows_a_change_within_two_seconds() -> None:
    clock = Clock()
    tracker = ProgressTracker(None, clock=clock)
    feed(tracker, clock, 8_000_000, 3.0, 65536)
    feed(tracker, clock, 2_000_000, 2.0, 65536)
    assert 1.8 <= tracker.snapshot().speed_mbps <= 2.2


def test_a_stall_decays_speed_to_zero_and_eta_to_unknown() -> None:
    clock = Clock()
    tracker = ProgressTracker(10_000_000, clock=clock)
    feed(tracker, clock, 1_000_000, 2.0, 65536)
    clock.now += 5
    progress = tracker.snapshot()
    assert progress.speed_mbps == 0.0
    assert progress.eta_seconds is None
    assert tracker.seconds_since_last_byte() >= 5


def test_eta_is_remaining_bytes_over_smoothed_speed_rounded_up() -> None:
    clock = Clock()
    tracker = ProgressTracker(10_000_000, clock=clock)
    feed(tracker, clock, 1_000_000, 2.0, 50_000)
    progress = tracker.snapshot()
    assert progress.downloaded_bytes == 2_000_000
    assert progress.eta_seconds == 8


def test_restart_begins_a_new_window() -> None:
    clock = Clock()
    tracker = ProgressTracker(10_000_000, clock=clock)
    feed(tracker, clock, 1_000_000, 2.0, 50_000)
    tracker.restart(0, 10_000_000)
    assert tracker.snapshot().downloaded_bytes == 0
    assert tracker.snapshot().speed_mbps == 0.0


def test_progress_is_throttled_to_the_interval() -> None:
    clock = Clock()
    tracker = ProgressTracker(None, interval=0.25, clock=clock, wall_clock=clock)
    assert tracker.due()
    tracker.mark_emitted()
    emitted = 0
    for _ in range(64):  # one second in steps that binary floats hold exactly
        clock.now += 1 / 64
        if tracker.due():
            tracker.mark_emitted()
            emitted += 1
    assert emitted == 4


def test_the_interval_is_kept_between_the_timestamps_events_carry() -> None:
    # The byte clock (monotonic) and the clock of timestamps drift apart, as when the
    # process is paused between reading one and the other: only timestamps count.
    ticks, wall = Clock(), Clock()
    wall.now = 1_700_000_000.0
    tracker = ProgressTracker(None, interval=0.4, clock=ticks, wall_clock=wall)
    first = tracker.mark_emitted()
    assert first == wall.now
    ticks.now += 0.4
    wall.now += 0.397
    assert not tracker.due()
    assert abs(tracker.until_due() - 0.003) < 1e-6
    wall.now += 0.003
    assert tracker.due()
    assert tracker.mark_emitted() - first >= 0.4


def test_a_clock_set_back_does_not_hold_progress_back() -> None:
    clock = Clock()
    tracker = ProgressTracker(None, interval=0.4, clock=clock, wall_clock=clock)
    tracker.mark_emitted()
    clock.now -= 3600
    assert tracker.due()
    assert tracker.until_due() == 0.0


def test_progress_units_follow_the_contract() -> None:
    progress = Progress(downloaded_bytes=47_185_920, total_bytes=104_857_600, speed_bps=3_200_000)
    wire = progress.to_wire()
    assert wire["percentage"] == 45.0
    assert wire["speed_mbps"] == 3.2
    # 18.02 s left: rounded up, so the ETA never says done before it is.
    assert wire["eta_seconds"] == 19
    # Never 100.0 while bytes are missing, one decimal, and nulls for an unknown size.
    assert Progress(999_999, 1_000_000).percentage == 99.9
    assert Progress(1_000_000, 1_000_000).percentage == 100.0
    unknown = Progress(5, None, 10.0).to_wire()
    assert (unknown["total_bytes"], unknown["percentage"], unknown["eta_seconds"]) == (
        None,
        None,
        None,
    )
