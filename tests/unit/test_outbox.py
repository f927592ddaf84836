"""What a late reader is sent: the newest progress per task, every lifecycle frame, in
`seq` order, and the progress frame before a lifecycle frame (the 100 % one) kept; and
never more than the outbox's limit, whatever is put in."""

from __future__ import annotations

import random

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


def test_a_full_outbox_still_takes_newer_progress_of_a_task_it_holds() -> None:
    box = Outbox(limit=2)
    assert box.put(progress(1, "a")) and box.put(progress(2, "b"))
    assert not box.put(progress(3, "c"))  # a third task needs a slot there is not
    assert box.put(progress(4, "a"))  # replaces 1, and moves behind 2
    assert [f.seq for f in box.take_all()] == [2, 4]
    assert not box  # empty after take_all, and usable again
    assert box.put(lifecycle(5, "a"))


def test_random_streams_keep_order_every_lifecycle_frame_and_the_newest_progress() -> None:
    """Against a plain model: the order is seq order, a lifecycle frame that was accepted
    always comes out, each task's newest progress comes out, the size never passes limit."""
    rng = random.Random(15)
    for _ in range(200):
        box = Outbox(limit=rng.randint(1, 8))
        taken: list[Frame] = []
        accepted_lifecycle: list[int] = []
        newest_progress: dict[str, int] = {}
        for seq in range(1, rng.randint(2, 60)):
            task = rng.choice("abcd")
            frame = progress(seq, task) if rng.random() < 0.7 else lifecycle(seq, task)
            if box.put(frame):
                if frame.progress:
                    newest_progress[task] = seq
                else:
                    accepted_lifecycle.append(seq)
            assert len(box) <= box.limit
            if rng.random() < 0.2:
                taken += box.take_all()
        taken += box.take_all()
        seqs = [f.seq for f in taken]
        assert seqs == sorted(set(seqs))
        assert [f.seq for f in taken if not f.progress] == accepted_lifecycle
        assert set(newest_progress.values()) <= set(seqs)


def test_coalesced_equals_what_an_outbox_that_never_fills_would_send() -> None:
    rng = random.Random(10)
    for _ in range(200):
        stream = [
            progress(seq, rng.choice("abc")) if rng.random() < 0.8 else lifecycle(seq, "a")
            for seq in range(1, rng.randint(2, 80))
        ]
        box = Outbox(limit=len(stream))
        assert all(box.put(frame) for frame in stream)
        assert box.take_all() == coalesced(stream)
