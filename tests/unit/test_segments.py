"""SegmentPlan: splitting, claiming, stealing and absorbing keep the segments tiling the file."""

from __future__ import annotations

import random

from progress_server.engine.segments import Segment, SegmentPlan

MiB = 1024 * 1024


def tiles(plan: SegmentPlan) -> bool:
    expected = 0
    for s in plan.segments:
        if s.start != expected or not s.start <= s.written <= s.pos:
            return False
        assert s.end is not None
        if s.pos > s.end:
            return False
        expected = s.end
    return expected == plan.total


def test_split_cuts_the_rest_into_equal_parts_of_at_least_min_size() -> None:
    plan = SegmentPlan.single(96 * MiB, 8 * MiB)
    first = plan.claim(0)
    assert first is not None
    added = plan.split(first, 4)
    assert [(s.start, s.end) for s in plan.segments] == [
        (0, 24 * MiB),
        (24 * MiB, 48 * MiB),
        (48 * MiB, 72 * MiB),
        (72 * MiB, 96 * MiB),
    ]
    assert all(s.owner is None for s in added) and first.owner == 0
    assert tiles(plan)


def test_split_never_makes_a_part_smaller_than_min_size() -> None:
    plan = SegmentPlan.single(20 * MiB, 8 * MiB)
    (only,) = plan.segments
    assert len(plan.split(only, 16)) == 1  # two parts of 10 MiB, not three of 6.7
    assert tiles(plan)
    small = SegmentPlan.single(16 * MiB - 1, 8 * MiB)
    assert small.split(small.segments[0], 4) == []


def test_split_starts_from_what_already_arrived() -> None:
    plan = SegmentPlan.single(40 * MiB, 8 * MiB, kept=8 * MiB)
    (only,) = plan.segments
    plan.split(only, 4)
    assert [(s.start, s.pos, s.end) for s in plan.segments] == [
        (0, 8 * MiB, 16 * MiB),
        (16 * MiB, 16 * MiB, 24 * MiB),
        (24 * MiB, 24 * MiB, 32 * MiB),
        (32 * MiB, 32 * MiB, 40 * MiB),
    ]
    assert plan.received == 8 * MiB


def test_steal_cuts_the_largest_remaining_segment_at_its_midpoint() -> None:
    plan = SegmentPlan(
        100 * MiB,
        [
            Segment(0, 50 * MiB, 40 * MiB, 40 * MiB, 1),
            Segment(50 * MiB, 100 * MiB, 60 * MiB, 60 * MiB, 2),
        ],
        8 * MiB,
    )
    stolen = plan.steal(3)
    assert stolen is not None
    # The second has 40 MiB left (60..100): cut at 80.
    assert (stolen.start, stolen.end, stolen.owner) == (80 * MiB, 100 * MiB, 3)
    assert plan.segments[1].end == 80 * MiB
    assert tiles(plan)


def test_steal_refuses_when_a_half_would_be_under_min_size() -> None:
    plan = SegmentPlan(32 * MiB, [Segment(0, 32 * MiB, 17 * MiB, 17 * MiB, 1)], 8 * MiB)
    assert plan.steal(2) is None  # 15 MiB left: halves of 7.5 MiB
    assert plan.segments[0].end == 32 * MiB


def test_claim_takes_the_first_unowned_unfinished_segment() -> None:
    plan = SegmentPlan(
        30,
        [Segment(0, 10, 10, 10), Segment(10, 20, 12, 12, owner=1), Segment(20, 30, 25, 25)],
        1,
    )
    got = plan.claim(7)
    assert got is plan.segments[2] and got.owner == 7
    assert plan.claim(8) is None


def test_absorb_next_only_takes_an_unstarted_unowned_neighbour() -> None:
    plan = SegmentPlan(
        30, [Segment(0, 10, 10, 10, 1), Segment(10, 20, 10, 10), Segment(20, 30, 20, 20, 2)], 1
    )
    first = plan.segments[0]
    assert plan.absorb_next(first)
    assert first.end == 20 and len(plan.segments) == 2
    assert not plan.absorb_next(first)  # the next one is owned
    plan.segments[1].owner = None
    plan.segments[1].pos = 21
    assert not plan.absorb_next(first)  # ... or already started


def test_written_prefix_stops_at_the_first_gap() -> None:
    plan = SegmentPlan(
        30, [Segment(0, 10, 10, 10), Segment(10, 20, 15, 14), Segment(20, 30, 30, 30)], 1
    )
    assert plan.written_prefix() == 14
    plan.segments[1].written = plan.segments[1].pos = 20
    assert plan.written_prefix() == 30
    assert plan.complete


def test_restore_accepts_only_spans_that_tile_the_file() -> None:
    good = SegmentPlan.restore(30, [(0, 10, 4), (10, 30, 30)], 1)
    assert good is not None and good.received == 24 and tiles(good)
    assert SegmentPlan.restore(30, [(0, 10, 4), (11, 30, 11)], 1) is None  # a gap
    assert SegmentPlan.restore(30, [(0, 10, 11), (10, 30, 10)], 1) is None  # past its end
    assert SegmentPlan.restore(30, [(0, 10, 4)], 1) is None  # short of the total
    assert SegmentPlan.restore(30, [], 1) is None


def test_unknown_total_ends_where_the_body_ended() -> None:
    plan = SegmentPlan.single(None, 8 * MiB)
    (only,) = plan.segments
    assert plan.split(only, 4) == [] and plan.steal(1) is None
    only.pos = only.written = 12345
    plan.end_unknown_total(only)
    assert plan.total == 12345 and plan.complete


def test_random_steals_keep_the_plan_tiling_until_done() -> None:
    rng = random.Random(12)
    for _ in range(50):
        total = rng.randrange(1, 400) * 1000
        plan = SegmentPlan.single(total, rng.randrange(1, 50) * 1000)
        first = plan.claim(0)
        assert first is not None
        plan.split(first, rng.randrange(1, 17))
        owners = {0: first}
        for n, s in enumerate(plan.segments[1:], start=1):
            s.owner = n
            owners[n] = s
        while owners:
            owner = rng.choice(sorted(owners))
            seg = owners[owner]
            assert seg.end is not None
            step = min(seg.end - seg.pos, rng.randrange(1, 40_000))
            seg.pos += step
            seg.written = seg.pos
            if seg.finished:
                del owners[owner]
                got = plan.claim(owner) or plan.steal(owner)
                if got is not None:
                    owners[owner] = got
            assert tiles(plan)
        assert plan.complete and plan.received == total


def test_layout_shows_each_part_and_folds_finished_neighbours() -> None:
    plan = SegmentPlan(
        1000,
        [
            Segment(0, 200, 200, 200),
            Segment(200, 400, 400, 400),  # finished next to finished: one part
            Segment(400, 700, 450, 400),
            Segment(700, 800, 800, 800),  # finished after an unfinished part: its own
            Segment(800, 1000, 800, 800),
        ],
        100,
    )
    assert plan.layout() == [[0, 400, 400], [400, 700, 50], [700, 800, 100], [800, 1000, 0]]
    assert sum(done for _, _, done in plan.layout()) == plan.received
