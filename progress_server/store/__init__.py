"""The storage seam: the typed interface every other module uses to keep tasks, events,
keys and sessions, whatever database is behind it.

`Store` is a Protocol; `progress_server.store.sqlite.SqliteStore` is the embedded default.
The interface is shaped so another database (PostgreSQL, for a cluster) can implement it
as is: every write that must be atomic is one method (no transaction or cursor leaves the
store), rows come back as plain dataclasses, and a task's `order` is only an opaque,
increasing submission order (what `list_tasks(after_order=...)` pages by).

Appends return the event as stored. SQLite keeps the seq the EventBus gave it; a cluster's
database gives the seq itself, in commit order, so there the draft's seq is ignored.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

from progress_server.models import Event, Task, TaskState
from progress_server.store.rows import (
    UNSET,
    ApiKeyRow,
    DuplicateSubmission,
    FilenameTaken,
    SessionRow,
    SnapshotRow,
    TaskChange,
    Unset,
)

__all__ = [
    "UNSET",
    "ApiKeyRow",
    "DuplicateSubmission",
    "FilenameTaken",
    "SessionRow",
    "SnapshotRow",
    "Store",
    "TaskChange",
    "Unset",
]


class Store(Protocol):
    # Seconds the last write transaction took, and callbacks told each one's duration
    # (the metrics histogram).
    last_write_seconds: float
    write_observers: list[Callable[[float], None]]

    # -- lifecycle -----------------------------------------------------------------------

    async def open(self) -> None:
        """Connect and apply the migrations not applied yet, each whole or not at all."""

    async def close(self) -> None: ...

    async def applied_migrations(self) -> list[int]: ...

    # -- API keys ------------------------------------------------------------------------

    async def create_key(self, name: str, key_hash: str, is_admin: bool) -> int:
        """Store a key by its hash; returns its key_id."""

    async def list_keys(self) -> list[ApiKeyRow]: ...

    async def key_by_hash(self, key_hash: str) -> ApiKeyRow | None: ...

    async def revoke_key(self, name: str) -> bool:
        """Revoke a live key by name; False when no live key has that name."""

    def key_generation(self) -> int:
        """A number that changes once any process (this one, the CLI, another node) has
        created, revoked or otherwise changed an API key: compare it with an earlier answer.

        Synchronous and cheap (no query in the common case, never a wait on I/O): the key
        ring asks on every authenticated request and 50 times a second, so a revocation
        bites at once. SQLite reads `PRAGMA data_version` on a connection of its own and, when
        another connection committed, a trigger-kept counter. A PostgreSQL store can count
        the notifications of a LISTEN on a channel its key writes NOTIFY (within a second).
        """

    # -- page sessions -------------------------------------------------------------------

    async def insert_session(self, session: SessionRow) -> None: ...

    async def delete_session(self, token_hash: str) -> None: ...

    async def live_sessions(self, now: float) -> list[SessionRow]:
        """Unexpired sessions; expired ones are deleted on the way."""

    # -- tasks ---------------------------------------------------------------------------

    async def insert_task(self, task: Task, idempotency_key: str | None, event: Event) -> Event:
        """Store a new task together with its first event, atomically; sets `task.order`
        and returns the event as stored."""

    async def task_by_idempotency_key(
        self, owner_key_id: int, idempotency_key: str, since: float
    ) -> Task | None: ...

    async def clear_idempotency_key(self, owner_key_id: int, idempotency_key: str) -> None:
        """Free a key older than its window so it can name a new task."""

    async def get_task(self, task_id: str) -> Task | None: ...

    async def list_tasks(
        self,
        owner_key_id: int | None,
        states: Sequence[TaskState] = (),
        limit: int = 50,
        after_order: int = 0,
        newest_first: bool = False,
    ) -> list[Task]:
        """Tasks in submission order (or newest first); `owner_key_id` None means all."""

    async def filenames_in_use(self) -> set[str]: ...

    async def claim_filename(self, task_id: str, filename: str) -> bool:
        """Give the task this filename unless another task has it, atomically."""

    async def update_task(self, task_id: str, change: TaskChange) -> None: ...

    async def record_transition(
        self, event: Event | None, task_id: str, change: TaskChange
    ) -> Event | None:
        """Change a task and store the event that tells of it, atomically; returns the
        event as stored."""

    async def save_snapshots(self, snapshots: Iterable[SnapshotRow]) -> None:
        """Store running tasks' byte counts (throttled progress), in one write."""

    async def delete_task(self, task_id: str) -> None:
        """Remove a task and its events."""

    # -- events --------------------------------------------------------------------------

    async def insert_event(self, event: Event) -> Event:
        """Store an event that changes no task; returns it as stored."""

    async def events_after(
        self,
        after_seq: int,
        *,
        task_ids: Sequence[str] | None = None,
        owner_key_id: int | None = None,
        limit: int = 1000,
    ) -> list[Event]:
        """Stored events with seq > after_seq, in seq order, optionally narrowed."""

    async def max_event_seq(self) -> int: ...

    async def seq_reserved(self) -> int:
        """The highest seq handed out blocks may reach (see EventBus)."""

    async def reserve_seq(self, upto: int) -> None: ...
