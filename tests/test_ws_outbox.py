"""What a late reader is sent: the newest progress per task, every lifecycle frame, in
`seq` order, and the progress frame before a lifecycle frame (the 100 % one) kept."""

from __future__ import annotations

from progress_server.outbox import Frame, Outbox, coalesced


def progress(seq: int, task: str) -> Frame:
    return Frame(b"p", seq=seq, task_id=task, progress=True)


def lifecycle(seq: int, task: str) -> Frame:
    return Frame(b"l", seq=seq, task_id=task)


STREAM = [
    progress(1, "a"),
    progress(2, "b"),
    progress(3, "a"),
    progress(4, "a"),  # a's 100 %: the last progress before its completion
    lifecycle(5, "a"),
    progress(6, "b"),
    progress(7, "a"),  # a's processing progress, after the lifecycle frame
    lifecycle(8, "b"),
]
# What survives: b's 2 is superseded by 6; a's 1 and 3 by 4; 4 is sealed by 5.
EXPECTED = [4, 5, 6, 7, 8]


def test_coalesced_batch_keeps_newest_progress_and_every_lifecycle_frame() -> None:
    assert [f.seq for f in coalesced(STREAM)] == EXPECTED


def test_outbox_coalesces_the_same_way_and_refuses_what_does_not_fit() -> None:
    box = Outbox(limit=5)
    assert all(box.put(frame) for frame in STREAM)
    assert [f.seq for f in box.take_all()] == EXPECTED
    assert box.superseded == 3

    small = Outbox(limit=2)
    assert small.put(lifecycle(1, "a"))
    assert small.put(progress(2, "a"))
    assert small.put(progress(3, "a"))  # replaces 2: no new slot needed
    assert not small.put(lifecycle(4, "a"))  # a lifecycle frame that does not fit
    assert [f.seq for f in small.take_all()] == [1, 3]
