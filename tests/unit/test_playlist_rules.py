"""How a playlist's parent follows its entries: its state, the table's steps to it, and one
combined progress that never goes back."""

from __future__ import annotations

import itertools
import uuid

import pytest

from progress_server import transitions
from progress_server.media.results import PlaylistEntry
from progress_server.models import Task, TaskState
from progress_server.playlist_rules import (
    EntryFigures,
    combined_progress,
    entry_task_id,
    new_entry,
    playlist_state,
    steps_to,
)

P, D, R = TaskState.PENDING, TaskState.DOWNLOADING, TaskState.PROCESSING
C, F, X, Z = TaskState.COMPLETED, TaskState.FAILED, TaskState.CANCELLED, TaskState.PAUSED


@pytest.mark.parametrize(
    ("entries", "expected"),
    [
        ([C, C], C),
        ([C, F], F),
        ([D, F], F),  # failed for good: the parent says so at once
        ([C, X], X),
        ([X, X], X),
        ([C, D], D),
        ([P, R], D),
        ([R, C], R),
        ([Z, C], Z),
        ([Z, R], R),
        ([Z, D], D),
    ],
)
def test_the_parent_takes_the_state_its_entries_make(
    entries: list[TaskState], expected: TaskState
) -> None:
    assert playlist_state(D, entries) is expected


def test_a_cancelled_playlist_stays_cancelled_until_an_entry_runs_again() -> None:
    assert playlist_state(X, [C, F]) is X
    assert playlist_state(X, [C, X]) is X
    assert playlist_state(X, [C, P]) is D


def test_no_entries_change_nothing() -> None:
    assert playlist_state(D, []) is D


@pytest.mark.parametrize(("current", "target"), list(itertools.product(list(TaskState), repeat=2)))
def test_every_step_is_one_the_transition_table_allows(
    current: TaskState, target: TaskState
) -> None:
    steps = steps_to(current, target)
    if current is C and target is not C:
        assert steps is None  # a completed task never changes again
        return
    assert steps is not None
    for before, after in itertools.pairwise([current, *steps]):
        assert transitions.may_follow(before, after), (before, after)
    assert (steps[-1] if steps else current) is target


def test_the_steps_are_the_shortest() -> None:
    assert steps_to(D, C) == [R, C]
    assert steps_to(F, D) == [P, D]
    assert steps_to(Z, D) == [P, D]
    assert steps_to(D, D) == []


def test_entry_ids_are_uuids_derived_from_parent_and_place() -> None:
    parent = str(uuid.uuid4())
    first = entry_task_id(parent, 1)
    assert uuid.UUID(first).version == 5
    assert first == entry_task_id(parent, 1)
    assert first != entry_task_id(parent, 2)
    assert first != entry_task_id(str(uuid.uuid4()), 1)


def test_progress_counts_sizes_not_known_yet_as_the_mean_of_the_known() -> None:
    progress, floor = combined_progress(
        [EntryFigures(D, 50, 100, 10.0), EntryFigures(P, 0, None)], 0.0
    )
    assert (progress.downloaded_bytes, progress.total_bytes) == (50, 200)
    assert progress.percentage == 25.0
    assert progress.speed_bps == 10.0
    assert floor == 0.25


def test_progress_is_unknown_until_some_size_is() -> None:
    progress, floor = combined_progress([EntryFigures(D, 50, None), EntryFigures(P, 0, None)], 0)
    assert progress.total_bytes is None and progress.percentage is None
    assert floor == 0


def test_cancelled_entries_do_not_count_and_finished_ones_count_whole() -> None:
    progress, _ = combined_progress(
        [EntryFigures(C, 300, 300), EntryFigures(X, 10, 1000), EntryFigures(D, 100, 300)], 0
    )
    assert (progress.downloaded_bytes, progress.total_bytes) == (400, 600)


def test_the_percentage_never_goes_back_when_a_size_turns_out_larger() -> None:
    shown = []
    floor = 0.0
    # Entry two's estimate grows from 100 to 1000 bytes while its bytes arrive.
    for entries in (
        [EntryFigures(C, 100, 100), EntryFigures(D, 50, 100)],
        [EntryFigures(C, 100, 100), EntryFigures(D, 60, 1000)],
        [EntryFigures(C, 100, 100), EntryFigures(D, 900, 1000)],
        [EntryFigures(C, 100, 100), EntryFigures(R, 1000, 1000)],
    ):
        progress, floor = combined_progress(entries, floor)
        assert progress.percentage is not None
        shown.append(progress.percentage)
    assert shown == sorted(shown)
    assert shown[-1] == 100.0


def test_all_entries_past_downloading_is_whole() -> None:
    progress, floor = combined_progress([EntryFigures(C, 5, 5), EntryFigures(R, 7, 7)], 0.3)
    assert progress.percentage == 100.0 and floor == 1.0


def _parent() -> Task:
    return Task(
        task_id=str(uuid.uuid4()),
        owner_key_id=7,
        url="https://videos.example/list",
        filename="My List",
        state=D,
        created_at=0.0,
        updated_at=0.0,
        options={"format": "ba/b", "playlist": True, "max_speed_mbps": 2},
        source="media",
    )


def test_an_entry_with_a_page_of_its_own_is_fetched_as_one_video() -> None:
    parent = _parent()
    entry = new_entry(parent, PlaylistEntry(3, "Three", 12.0, "https://videos.example/v/3"), "e", 1)

    assert (entry.url, entry.parent_id, entry.playlist_index) == (
        "https://videos.example/v/3",
        parent.task_id,
        3,
    )
    assert entry.options == {"format": "ba/b", "max_speed_mbps": 2, "playlist": False}
    assert (entry.owner_key_id, entry.source, entry.state) == (7, "media", P)
    assert entry.filename is None and entry.entries is None


@pytest.mark.parametrize("url", [None, "ftp://videos.example/v/3", "javascript:alert(1)"])
def test_an_entry_without_a_page_is_its_item_of_the_list(url: str | None) -> None:
    parent = _parent()
    entry = new_entry(parent, PlaylistEntry(2, None, None, url), "e", 1)

    assert entry.url == parent.url and entry.playlist_index == 2
    assert entry.options == {"format": "ba/b", "max_speed_mbps": 2}


def test_events_tell_which_entries_belong_to_which_parent() -> None:
    from progress_server.models import Event, EventName
    from progress_server.playlist_rules import memberships

    def event(name: EventName, task_id: str, **body: object) -> Event:
        return Event(1, name, task_id, 1, TaskState.PENDING, 0.0, dict(body))

    queued = event(EventName.QUEUED, "e1", parent_id="p", playlist_index=1)
    assert memberships(queued) == [("e1", "p")]
    started = event(EventName.STARTED, "p", entries=["e1", "e2"])
    assert memberships(started) == [("e1", "p"), ("e2", "p")]
    assert memberships(event(EventName.QUEUED, "t")) == []
    assert memberships(event(EventName.STARTED, "t")) == []
    assert memberships(event(EventName.PROGRESS, "t", entries=["x"])) == []
