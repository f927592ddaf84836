"""How a playlist's parent task follows its entries: the state their states make, the steps
the transition table allows to reach it, and one combined progress that never goes back.

Pure functions and values; progress_server.playlists applies them to the live tasks.
"""

from __future__ import annotations

import uuid
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from progress_server.media.results import PlaylistEntry
from progress_server.models import MEDIA_SOURCE, Event, EventName, Progress, Task, TaskState
from progress_server.transitions import NEXT_STATES

_RUNNING = frozenset({TaskState.PENDING, TaskState.DOWNLOADING})
_DONE_DOWNLOADING = frozenset({TaskState.PROCESSING, TaskState.COMPLETED})

# The event that tells of a task entering each state.
EVENT_FOR_STATE = {
    TaskState.PENDING: EventName.QUEUED,
    TaskState.DOWNLOADING: EventName.STARTED,
    TaskState.PROCESSING: EventName.PROCESSING,
    TaskState.COMPLETED: EventName.COMPLETED,
    TaskState.FAILED: EventName.ERROR,
    TaskState.CANCELLED: EventName.CANCELLED,
    TaskState.PAUSED: EventName.PAUSED,
}


def entry_task_id(parent_id: str, index: int) -> str:
    """An entry's task id, derived from its parent and place: a run that creates the entries
    again after a crash finds the ones that were already stored instead of doubling them."""
    return str(uuid.uuid5(uuid.UUID(parent_id), f"playlist-entry-{index}"))


def new_entry(parent: Task, entry: PlaylistEntry, task_id: str, now: float) -> Task:
    """An entry's task: a media task of the parent's owner with the parent's options, its
    own page when the site gives one, else item `playlist_index` of the parent's URL."""
    options = {k: v for k, v in parent.options.items() if k != "playlist"}
    url = entry.url if entry.url and urlsplit(entry.url).scheme in ("http", "https") else None
    if url is not None:
        # Its own page: fetched as one video, never as a playlist of its own.
        options["playlist"] = False
    return Task(
        task_id=task_id,
        owner_key_id=parent.owner_key_id,
        url=url or parent.url,
        filename=None,
        state=TaskState.PENDING,
        created_at=now,
        updated_at=now,
        options=options,
        source=MEDIA_SOURCE,
        parent_id=parent.task_id,
        playlist_index=entry.index,
    )


def playlist_state(current: TaskState, entries: Sequence[TaskState]) -> TaskState:
    """The state a parent should be in, given its entries' states (CONTRACT.md: completed
    when every entry completed, failed when any failed for good)."""
    if not entries:
        return current
    if TaskState.FAILED in entries:
        target = TaskState.FAILED
    elif all(state is TaskState.COMPLETED for state in entries):
        target = TaskState.COMPLETED
    elif all(state.is_final for state in entries):
        target = TaskState.CANCELLED
    elif any(state in _RUNNING for state in entries):
        target = TaskState.DOWNLOADING
    elif TaskState.PROCESSING in entries:
        target = TaskState.PROCESSING
    else:
        target = TaskState.PAUSED
    if current is TaskState.CANCELLED and target.is_final:
        # The user cancelled the playlist: that stands until an entry runs again.
        return current
    return target


def steps_to(current: TaskState, target: TaskState) -> list[TaskState] | None:
    """The shortest run of states the transition table allows from `current` to `target`
    (empty when they are the same, None when the table has no way)."""
    if current is target:
        return []
    came_from: dict[TaskState, TaskState] = {current: current}
    todo = deque([current])
    while todo:
        state = todo.popleft()
        for following in sorted(NEXT_STATES[state]):
            if following in came_from:
                continue
            came_from[following] = state
            if following is target:
                path = [following]
                while came_from[path[-1]] is not current:
                    path.append(came_from[path[-1]])
                return path[::-1]
            todo.append(following)
    return None


@dataclass(frozen=True)
class EntryFigures:
    """What the parent needs to know of one entry (from the live snapshot)."""

    state: TaskState
    downloaded_bytes: int
    total_bytes: int | None
    speed_bps: float = 0.0


def combined_progress(entries: Sequence[EntryFigures], floor: float) -> tuple[Progress, float]:
    """The parent's progress over its entries, and the new floor (the fraction shown).

    Cancelled entries do not count. An entry past downloading counts as whole; one whose
    size is not known yet counts as the mean of the known sizes, so the total firms up as
    entries start. The total is held back where it would lower the fraction already shown.
    """
    counted = [e for e in entries if e.state is not TaskState.CANCELLED]
    if not counted:
        return Progress(), floor
    downloaded = sum(e.downloaded_bytes for e in counted)
    speed = sum(e.speed_bps for e in counted if e.state is TaskState.DOWNLOADING)
    if all(e.state in _DONE_DOWNLOADING for e in counted):
        return Progress(downloaded, downloaded, 0.0), 1.0
    sizes = [e.downloaded_bytes if e.state in _DONE_DOWNLOADING else e.total_bytes for e in counted]
    known = [size for size in sizes if size is not None]
    if not known:
        return Progress(downloaded, None, speed), floor
    mean = sum(known) / len(known)
    total = max(downloaded, int(sum(known) + mean * (len(sizes) - len(known))))
    if total and downloaded and downloaded / total < floor:
        total = max(downloaded, int(downloaded / floor))
    fraction = downloaded / total if total else 0.0
    return Progress(downloaded, total, speed), max(floor, min(fraction, 1.0))


def memberships(event: Event) -> list[tuple[str, str]]:
    """The (entry, parent) pairs an event tells of: an entry's queued event names its
    parent, a parent's started event lists its entries."""
    parent = event.body.get("parent_id") if event.name is EventName.QUEUED else None
    if isinstance(parent, str):
        return [(event.task_id, parent)]
    entries = event.body.get("entries") if event.name is EventName.STARTED else None
    if isinstance(entries, list):
        return [(str(entry), event.task_id) for entry in entries]
    return []
