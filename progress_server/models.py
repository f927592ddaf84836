"""Task states, progress figures and events, with the one place their wire shapes are built.

The guide's shapes are exact: polling, WebSocket, history and webhooks all serialise through
the functions here so they cannot drift apart.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from progress_server import filenames

JSON = dict[str, Any]


class TaskState(enum.StrEnum):
    PENDING = "pending"
    DOWNLOADING = "downloading"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    PAUSED = "paused"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATES

    @property
    def is_active(self) -> bool:
        return self in (TaskState.PENDING, TaskState.DOWNLOADING, TaskState.PROCESSING)


FINAL_STATES = frozenset({TaskState.COMPLETED, TaskState.FAILED, TaskState.CANCELLED})


class ErrorType(enum.StrEnum):
    NETWORK_ERROR = "network_error"
    HTTP_ERROR = "http_error"
    TIMEOUT = "timeout"
    DISK_ERROR = "disk_error"
    CHECKSUM_MISMATCH = "checksum_mismatch"
    SIZE_LIMIT = "size_limit"
    INVALID_URL = "invalid_url"
    PROCESSING_ERROR = "processing_error"
    # A media source (yt-dlp) found nothing to download: an unsupported URL, no media.
    EXTRACT_ERROR = "extract_error"
    CANCELLED = "cancelled"
    INTERNAL_ERROR = "internal_error"


class EventName(enum.StrEnum):
    QUEUED = "download.queued"
    STARTED = "download.started"
    PROGRESS = "download.progress"
    PROCESSING = "download.processing"
    COMPLETED = "download.completed"
    # Sent once, when the task ends `failed` (the guide's clients take it as the end).
    ERROR = "download.error"
    # A failed attempt that will be retried: error{type, message}, attempt, retry_in_seconds.
    RETRYING = "download.retrying"
    CANCELLED = "download.cancelled"
    PAUSED = "download.paused"
    # What came of a --on-complete command or --webhook delivery; never changes the state.
    HOOK = "download.hook"


def iso_utc(ts: float | None = None) -> str:
    """ISO 8601 UTC with a `Z`, millisecond precision."""
    moment = datetime.fromtimestamp(time.time() if ts is None else ts, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


# The guide's progress figures, in its polling order (see Progress.to_wire).
PROGRESS_KEYS = ("percentage", "downloaded_bytes", "total_bytes", "speed_mbps", "eta_seconds")


@dataclass(frozen=True)
class Progress:
    downloaded_bytes: int = 0
    total_bytes: int | None = None
    speed_bps: float = 0.0
    # False for a task that is not downloading: it has no speed and no ETA (see `in_state`).
    moving: bool = True

    def in_state(self, state: TaskState) -> Progress:
        """The figures a task in `state` reports: a task that is not downloading reads
        speed 0 and ETA null, whatever its last transfer measured."""
        if state is TaskState.DOWNLOADING:
            return self if self.moving else Progress(self.downloaded_bytes, self.total_bytes)
        if not self.moving:
            return self
        return Progress(self.downloaded_bytes, self.total_bytes, 0.0, moving=False)

    @property
    def percentage(self) -> float | None:
        if self.total_bytes is None:
            return None
        if self.total_bytes <= 0:
            return 100.0
        # Floor, not round: 99.96 % must not read 100.0 while bytes are still missing.
        tenths = int(self.downloaded_bytes * 1000 // self.total_bytes)
        return min(tenths, 1000) / 10

    @property
    def speed_mbps(self) -> float:
        return round(self.speed_bps / 1_000_000, 2)

    @property
    def eta_seconds(self) -> int | None:
        if self.total_bytes is None or not self.moving:
            return None
        remaining = max(self.total_bytes - self.downloaded_bytes, 0)
        if remaining == 0:
            return 0
        if self.speed_bps <= 0:
            return None
        return int(-(-remaining // self.speed_bps))

    def to_wire(self) -> JSON:
        """The guide's progress figures: in polling answers, records and events alike."""
        # The guide's polling response lists percentage first; JSON order is cosmetic but
        # matching the guide makes diffs against it readable.
        return {
            "percentage": self.percentage,
            "downloaded_bytes": self.downloaded_bytes,
            "total_bytes": self.total_bytes,
            "speed_mbps": self.speed_mbps,
            "eta_seconds": self.eta_seconds,
        }


def size_mb(size_bytes: int) -> float:
    return round(size_bytes / 2**20, 2)


# The task record's keys (`GET /api/downloads/{id}`): the guide's, always present, then the
# *extra* ones that appear only when set. The OpenAPI Task schema and the client's
# `TaskRecord` are checked against these two tuples (tests/test_openapi.py).
TASK_RECORD_KEYS = (
    "task_id",
    "url",
    "filename",
    "state",
    "progress",
    "result",
    "error",
    "created_at",
    "updated_at",
)
TASK_RECORD_OPTIONAL_KEYS = ("sha256", "options", "node")
# *extra* keys of a download under way, from the task's run (CONTRACT.md,
# "Segmented downloads"): `connections` open now; `segments` of a split download.
TASK_RECORD_LIVE_KEYS = ("connections", "segments")
# *extra* keys of media tasks only (CONTRACT.md, "Media sources"): `source` when yt-dlp
# fetches it; a playlist's parent lists its `entries`, each entry names its `parent_id`.
TASK_RECORD_MEDIA_KEYS = ("source", "parent_id", "playlist_index", "entries")

# How a task's URL is fetched: as a file, or through yt-dlp.
HTTP_SOURCE = "http"
MEDIA_SOURCE = "media"


@dataclass
class Task:
    task_id: str
    owner_key_id: int
    url: str
    filename: str | None
    state: TaskState
    created_at: float
    updated_at: float
    sha256: str | None = None
    requested_filename: str | None = None
    downloaded_bytes: int = 0
    total_bytes: int | None = None
    result: JSON | None = None
    error: JSON | None = None
    options: JSON = field(default_factory=dict)
    etag: str | None = None
    last_modified: str | None = None
    attempts: int = 0
    # Submission order; the scheduler starts pending tasks in this order.
    order: int = 0
    # The SHA-256 of the request that made it, in canonical form (NewTask.fingerprint),
    # kept so a repeated Idempotency-Key can tell the same request from another one.
    request_hash: str | None = None
    source: str = HTTP_SOURCE
    # A playlist entry: its parent task and its 1-based place in the playlist.
    parent_id: str | None = None
    playlist_index: int | None = None
    # A playlist's parent: its entries' task ids in playlist order (None: not a playlist).
    entries: list[str] | None = None
    # Cluster mode: the node running the task now (None when none). Only a task read from
    # a cluster's database is `clustered`, and only its record names the node.
    # Not compared: where a task runs says nothing about what it is.
    node: str | None = field(default=None, compare=False)
    clustered: bool = field(default=False, compare=False)

    @property
    def is_media(self) -> bool:
        return self.source == MEDIA_SOURCE

    @property
    def is_playlist(self) -> bool:
        return self.entries is not None

    @property
    def best_filename(self) -> str | None:
        """The best name known: the file's (given by the user or the origin), else, until
        the origin names one, the URL's last path segment, sanitised."""
        return self.filename or filenames.from_url(self.url)

    def to_wire(self, progress: Progress | None = None) -> JSON:
        shown = (progress or Progress(self.downloaded_bytes, self.total_bytes)).in_state(self.state)
        record: JSON = {
            "task_id": self.task_id,
            "url": self.url,
            "filename": self.best_filename,
            "state": self.state.value,
            "progress": shown.to_wire(),
            "result": self.result,
            "error": self.error,
            "created_at": iso_utc(self.created_at),
            "updated_at": iso_utc(self.updated_at),
        }
        if self.sha256:
            record["sha256"] = self.sha256
        if self.options:
            record["options"] = self.options
        if self.clustered:
            record["node"] = self.node
        if self.is_media:
            record["source"] = self.source
        if self.parent_id is not None:
            record["parent_id"] = self.parent_id
            record["playlist_index"] = self.playlist_index
        if self.entries is not None:
            record["entries"] = list(self.entries)
        return record


@dataclass(frozen=True)
class Event:
    """One event of the server. `body` holds the guide's event-specific fields."""

    seq: int
    name: EventName
    task_id: str
    owner_key_id: int
    state: TaskState
    timestamp: float
    body: JSON = field(default_factory=dict)

    @property
    def is_progress(self) -> bool:
        return self.name is EventName.PROGRESS or (
            self.name is EventName.PROCESSING and "processing" in self.body
        )

    def to_wire(self) -> JSON:
        wire: JSON = {"event": self.name.value, "task_id": self.task_id}
        wire.update(self.body)
        wire["timestamp"] = iso_utc(self.timestamp)
        wire["seq"] = self.seq
        wire["state"] = self.state.value
        return wire


def polling_wire(task_id: str, state: TaskState, progress: Progress, changed_at: float) -> JSON:
    """The guide's polling response; also each task of a `subscribed` snapshot."""
    return {
        "task_id": task_id,
        "state": state.value,
        "progress": progress.in_state(state).to_wire(),
        "timestamp": iso_utc(changed_at),
    }


def error_body(error_type: ErrorType, message: str, **extra: Any) -> JSON:
    return {"error": {"type": error_type.value, "message": message, **extra}}


def completed_body(
    filename: str, size_bytes: int, duration_seconds: int | None, **extra: Any
) -> JSON:
    return {
        "result": {
            "filename": filename,
            "size_mb": size_mb(size_bytes),
            "duration_seconds": duration_seconds,
            **extra,
        }
    }
