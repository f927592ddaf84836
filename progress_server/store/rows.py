"""The values that cross the storage seam: stored rows, a new task's columns and the typed change
to a task."""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from typing import Final

from progress_server.models import JSON, Task, TaskState


@dataclass(frozen=True)
class ApiKeyRow:
    key_id: int
    name: str
    key_hash: str
    is_admin: bool
    created_at: float
    revoked_at: float | None


@dataclass(frozen=True)
class SessionRow:
    token_hash: str
    key_id: int
    csrf_token: str
    created_at: float
    expires_at: float


@dataclass(frozen=True)
class SnapshotRow:
    task_id: str
    downloaded_bytes: int
    total_bytes: int | None


# The columns a new task's row is inserted with, in new_task_params' order.
NEW_TASK_COLUMNS: Final = tuple(
    "task_id owner_key_id url filename requested_filename sha256 state options idempotency_key"
    " created_at updated_at source parent_id playlist_index request_hash".split()
)


def new_task_params(task: Task, idempotency_key: str | None) -> list[object]:
    """A new task's values for NEW_TASK_COLUMNS (options as JSON text)."""
    return [
        task.task_id,
        task.owner_key_id,
        task.url,
        task.filename,
        task.requested_filename,
        task.sha256,
        task.state.value,
        json.dumps(task.options),
        idempotency_key,
        task.created_at,
        task.updated_at,
        task.source,
        task.parent_id,
        task.playlist_index,
        task.request_hash,
    ]


class FilenameTaken(Exception):
    """Another task holds the filename a new task was to be stored with (another node
    named a task at the same moment); nothing was stored."""


class DuplicateSubmission(Exception):
    """The owner's Idempotency-Key already names a task (another node stored it a moment
    ago); nothing was stored."""


class Unset(enum.Enum):
    """A TaskChange field the change leaves alone (None is a value there: it clears)."""

    UNSET = "unset"


UNSET: Final = Unset.UNSET


@dataclass(frozen=True)
class TaskChange:
    """What one write changes on a task; every field left UNSET keeps its stored value."""

    state: TaskState | Unset = UNSET
    filename: str | Unset | None = UNSET
    downloaded_bytes: int | Unset = UNSET
    total_bytes: int | Unset | None = UNSET
    result: JSON | Unset | None = UNSET
    error: JSON | Unset | None = UNSET
    etag: str | Unset | None = UNSET
    last_modified: str | Unset | None = UNSET
    attempts: int | Unset = UNSET
    # A playlist's entries (task ids in playlist order); set once they exist.
    entries: list[str] | Unset | None = UNSET
    # When the change happened; a store stamps its own clock when it is left UNSET.
    updated_at: float | Unset = UNSET

    def columns(self) -> dict[str, object]:
        """The fields this change sets, by name (the names are the task's columns)."""
        values: dict[str, object] = {
            "state": self.state,
            "filename": self.filename,
            "downloaded_bytes": self.downloaded_bytes,
            "total_bytes": self.total_bytes,
            "result": self.result,
            "error": self.error,
            "etag": self.etag,
            "last_modified": self.last_modified,
            "attempts": self.attempts,
            "entries": self.entries,
            "updated_at": self.updated_at,
        }
        return {name: value for name, value in values.items() if value is not UNSET}

    def apply_to(self, task: Task) -> None:
        """Make the in-memory task say what the stored one now says."""
        if not isinstance(self.state, Unset):
            task.state = self.state
        if not isinstance(self.filename, Unset):
            task.filename = self.filename
        if not isinstance(self.downloaded_bytes, Unset):
            task.downloaded_bytes = self.downloaded_bytes
        if not isinstance(self.total_bytes, Unset):
            task.total_bytes = self.total_bytes
        if not isinstance(self.result, Unset):
            task.result = self.result
        if not isinstance(self.error, Unset):
            task.error = self.error
        if not isinstance(self.etag, Unset):
            task.etag = self.etag
        if not isinstance(self.last_modified, Unset):
            task.last_modified = self.last_modified
        if not isinstance(self.attempts, Unset):
            task.attempts = self.attempts
        if not isinstance(self.entries, Unset):
            task.entries = None if self.entries is None else list(self.entries)
        if not isinstance(self.updated_at, Unset):
            task.updated_at = self.updated_at
