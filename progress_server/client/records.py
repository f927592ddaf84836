"""The server's JSON as the client hands it out: typed dicts for records, progress and events.

Records and events are plain dicts exactly as the server sends them; `TaskRecord`'s keys are
checked against the server's own (`progress_server.models.TASK_RECORD_KEYS`) by
tests/test_openapi.py.
"""

# No `from __future__ import annotations` here: TypedDict reads NotRequired[...] from the
# evaluated annotations, and string annotations would make every key required at runtime.
from typing import Any, NotRequired, TypedDict

FINAL_STATES = frozenset({"completed", "failed", "cancelled"})
"""States a task leaves only through an explicit `retry`."""


class ProgressInfo(TypedDict):
    """The guide's progress figures. `total_bytes`, `percentage` and `eta_seconds` are
    None while the size is unknown; `speed_mbps` is decimal megabytes per second."""

    percentage: float | None
    downloaded_bytes: int
    total_bytes: int | None
    speed_mbps: float
    eta_seconds: int | None


class TaskError(TypedDict):
    type: str
    message: str


class TaskResult(TypedDict):
    filename: str
    size_mb: float
    duration_seconds: int | None


class TaskRecord(TypedDict):
    """One download task, as `GET /api/downloads/{id}` returns it."""

    task_id: str
    url: str
    filename: str | None
    state: str
    progress: ProgressInfo
    result: TaskResult | None
    error: TaskError | None
    created_at: str
    updated_at: str
    sha256: NotRequired[str]
    options: NotRequired[dict[str, Any]]
    # While downloading: connections open now; a split download's [start, end, done] parts.
    connections: NotRequired[int]
    segments: NotRequired[list[list[int]]]
    # Cluster mode: the node running the task now (None when none).
    node: NotRequired[str | None]
    # Media tasks only (#13): "media"; a playlist entry's parent and place; a parent's entries.
    source: NotRequired[str]
    parent_id: NotRequired[str]
    playlist_index: NotRequired[int]
    entries: NotRequired[list[str]]


class Event(TypedDict, total=False):
    """A frame from the WebSocket or a history entry.

    `event` names it: `download.queued`, `.started`, `.progress`, `.processing`,
    `.retrying` (a failed attempt that will be retried: `error`, `attempt`,
    `retry_in_seconds`), `.completed`, `.error` (sent once, when the task ends `failed`),
    `.cancelled`, `.paused`, or `subscribed` (the current snapshot of a task, sent when a
    subscription starts; for a failed task it carries `error`, for a completed one
    `result`; for `"*"` it carries `tasks`, a snapshot of every unfinished task). Which of
    the other keys are present depends on the event, as in the guide.
    """

    event: str
    task_id: str
    seq: int
    state: str
    timestamp: str
    progress: ProgressInfo
    result: TaskResult
    error: TaskError
    processing: dict[str, Any]
    tasks: list[dict[str, Any]]
    connections: int
    segments: list[list[int]]
    attempt: int
    retry_in_seconds: float
    fragments: dict[str, Any]
    entries: list[str]
