"""Which task state may follow which: the one table every state change is checked against.

The scheduler's actions ask it before they act (so a refused action changes nothing) and
TaskLifecycle checks every change against it before anything is written.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from progress_server.errors import Conflict
from progress_server.models import TaskState

_PENDING = TaskState.PENDING
_DOWNLOADING = TaskState.DOWNLOADING
_PROCESSING = TaskState.PROCESSING
_COMPLETED = TaskState.COMPLETED
_FAILED = TaskState.FAILED
_CANCELLED = TaskState.CANCELLED
_PAUSED = TaskState.PAUSED

NEXT_STATES: Final[Mapping[TaskState, frozenset[TaskState]]] = MappingProxyType(
    {
        # Started, paused or cancelled from the queue; straight to processing when the file
        # was already complete at a restart; failed when a run breaks before it starts.
        _PENDING: frozenset({_DOWNLOADING, _PROCESSING, _PAUSED, _CANCELLED, _FAILED}),
        # Itself: a retried attempt and a restart from zero are told in the same state.
        # Pending: queued again after a crash.
        _DOWNLOADING: frozenset(
            {_DOWNLOADING, _PROCESSING, _PAUSED, _CANCELLED, _FAILED, _PENDING}
        ),
        # Itself: processing again after a restart. Downloading: the file it was processing
        # was gone after a restart. A processing task cannot be paused.
        _PROCESSING: frozenset({_PROCESSING, _DOWNLOADING, _COMPLETED, _CANCELLED, _FAILED}),
        _PAUSED: frozenset({_PENDING, _CANCELLED}),
        # Retried (back to the queue); a failed task may still be cancelled.
        _FAILED: frozenset({_PENDING, _CANCELLED}),
        _CANCELLED: frozenset({_PENDING}),
        # The end: a completed task is never cancelled, paused or retried.
        _COMPLETED: frozenset(),
    }
)


def may_follow(current: TaskState, new: TaskState) -> bool:
    return new in NEXT_STATES[current]


def check(current: TaskState, new: TaskState) -> None:
    """Refuse a change the table does not allow (Conflict: HTTP 409 for the caller)."""
    if not may_follow(current, new):
        raise Conflict(f"a {current.value} task cannot become {new.value}")
