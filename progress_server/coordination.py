"""The seams between the scheduler and whatever decides which task this server runs and how
task changes are written: `Coordinator` hands out work, `TaskWrites` stores a task change
with its event, and a `RunLease` is a run's right to write for its task.

The implementations here are SQLite mode's: one process owns every task, so the queue is in
memory, recovery after a restart takes every unfinished task back, and no write needs a
fence. Cluster mode's (claims from a shared queue, leases, fenced writes) live in
progress_server.cluster.coordinator.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar
from urllib.parse import urlsplit

from progress_server.models import Event, Task, TaskState
from progress_server.settings import Settings
from progress_server.store import Store, TaskChange

if TYPE_CHECKING:
    from progress_server.runner import TaskRun


class LeaseLost(Exception):
    """This server no longer runs the task (another node took it over, or a user's action
    ended the run elsewhere): the run must stop at once and write nothing more."""

    def __init__(self, task_id: str) -> None:
        super().__init__(f"lease on task {task_id} lost")
        self.task_id = task_id


class RunLease(Protocol):
    """A run's right to write for its task."""

    def check(self) -> None:
        """Raise LeaseLost when the run may no longer write: called right before bytes go
        to the task's files, so it must be quick and must not await."""

    async def confirm(self) -> None:
        """Raise LeaseLost unless the task is provably still this run's (a fenced write):
        before a step no later write could undo, such as renaming the finished file."""


class NoLease:
    """SQLite mode: this process owns every task; nothing can take one away."""

    def check(self) -> None:
        return None

    async def confirm(self) -> None:
        return None


NO_LEASE = NoLease()


class TaskWrites(Protocol):
    """How task changes reach the store, each with the event that tells of it."""

    async def insert(self, task: Task, idempotency_key: str | None, draft: Event) -> Event:
        """Store a new task with its queued event (DuplicateSubmission, FilenameTaken)."""

    async def transition(
        self, task: Task, draft: Event, change: TaskChange, lease: RunLease | None
    ) -> Event:
        """Store a state change with its event: a run's (with its lease), or a user's
        action (without one). Conflict when the task is no longer where it was."""

    async def update(self, task: Task, change: TaskChange, lease: RunLease | None) -> None: ...

    async def append(self, draft: Event) -> Event:
        """Store an event that changes no task (a hook's outcome)."""


StoreT = TypeVar("StoreT", bound=Store)


class StoreWrites(Generic[StoreT]):
    """What every mode's task writes share: a new task, and an event that changes no task,
    go to the store as they are (no run holds either yet)."""

    def __init__(self, store: StoreT) -> None:
        self._store = store

    async def insert(self, task: Task, idempotency_key: str | None, draft: Event) -> Event:
        return await self._store.insert_task(task, idempotency_key, draft)

    async def append(self, draft: Event) -> Event:
        return await self._store.insert_event(draft)


class LocalWrites(StoreWrites[Store]):
    """SQLite mode: the scheduler's memory is the truth, so a write only records it."""

    async def transition(
        self, task: Task, draft: Event, change: TaskChange, lease: RunLease | None
    ) -> Event:
        await self._store.record_transition(draft, task.task_id, change)
        return draft

    async def update(self, task: Task, change: TaskChange, lease: RunLease | None) -> None:
        await self._store.update_task(task.task_id, change)


class Launcher(Protocol):
    """The scheduler, as a coordinator sees it."""

    @property
    def accepting(self) -> bool: ...

    @property
    def active_downloads(self) -> int: ...

    def launch(self, task: Task, lease: RunLease) -> TaskRun:
        """Start running `task` now (a download slot is taken unless it is processing)."""

    async def recover(self, task: Task) -> Task:
        """Make an unfinished task found at start-up ready to run again."""

    async def abandon(self, task_id: str) -> None:
        """Stop the task's run without writing anything: it is no longer this node's."""


class Coordinator(Protocol):
    """Decides which task this server runs next, and keeps what a run's writes need."""

    @property
    def writes(self) -> TaskWrites: ...

    @property
    def database_reachable(self) -> bool:
        """False while the shared database does not answer (no work is claimed then)."""

    def health_fields(self) -> dict[str, str]:
        """What /healthz adds about this server (a cluster node's id and database)."""

    async def start(self, launcher: Launcher, unfinished: Sequence[Task]) -> None:
        """Begin handing out work; `unfinished` are the tasks the store had unfinished."""

    async def stop(self, stopped: Sequence[TaskRun]) -> None:
        """The runs were stopped for a shutdown: keep their progress, let go of them."""

    def queue(self, task: Task) -> None:
        """The task was made pending here (submitted, resumed, retried)."""

    def unqueue(self, task_id: str) -> Task | None:
        """Take a task out of this server's queue; the queued copy, if it had one."""

    def queued(self, task_id: str) -> Task | None: ...

    def wake(self) -> None:
        """Start whatever may start now."""

    def slot_freed(self, run: TaskRun) -> None:
        """The run's download is over: another may start."""

    def run_ended(self, run: TaskRun) -> None: ...

    async def save_snapshots(self, runs: Sequence[TaskRun]) -> None:
        """Store running tasks' byte counts (throttled progress)."""

    def exclusive(self, name: str) -> AbstractAsyncContextManager[None]:
        """Held by one server at a time, cluster-wide: for work every node may start but
        only one may do at once (following a playlist's entries)."""


class LocalCoordinator:
    """SQLite mode: an in-memory queue started in submission order, within --max-concurrent
    and --max-per-host, and every unfinished task taken back after a restart."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self._settings = settings
        self._store = store
        self._writes = LocalWrites(store)
        self._launcher: Launcher | None = None
        self._pending: dict[str, Task] = {}
        self._hosts: Counter[str] = Counter()

    @property
    def writes(self) -> TaskWrites:
        return self._writes

    @property
    def database_reachable(self) -> bool:
        # The file is this process's own: a failing disk shows in the writes instead.
        return True

    def health_fields(self) -> dict[str, str]:
        return {}

    async def start(self, launcher: Launcher, unfinished: Sequence[Task]) -> None:
        self._launcher = launcher
        for task in unfinished:
            self._pending[task.task_id] = await launcher.recover(task)

    async def stop(self, stopped: Sequence[TaskRun]) -> None:
        await self._store.save_snapshots(
            run.snapshot_row() for run in stopped if run.task.state is TaskState.DOWNLOADING
        )

    def queue(self, task: Task) -> None:
        self._pending[task.task_id] = task
        self._pump()

    def unqueue(self, task_id: str) -> Task | None:
        return self._pending.pop(task_id, None)

    def queued(self, task_id: str) -> Task | None:
        return self._pending.get(task_id)

    def wake(self) -> None:
        self._pump()

    def slot_freed(self, run: TaskRun) -> None:
        self._hosts[run.host] -= 1
        if self._hosts[run.host] <= 0:
            del self._hosts[run.host]
        self._pump()

    def run_ended(self, run: TaskRun) -> None:
        self._pump()

    async def save_snapshots(self, runs: Sequence[TaskRun]) -> None:
        await self._store.save_snapshots([run.snapshot_row() for run in runs])

    def exclusive(self, name: str) -> AbstractAsyncContextManager[None]:
        # One process: its own locks (the caller's) are enough.
        return contextlib.nullcontext()

    def _pump(self) -> None:
        launcher = self._launcher
        if launcher is None or not launcher.accepting:
            return
        slots = launcher.active_downloads
        for task in sorted(self._pending.values(), key=lambda t: t.order):
            if slots >= self._settings.max_concurrent:
                break
            # A task recovered in processing needs no download slot.
            needs_slot = task.state is not TaskState.PROCESSING
            host = urlsplit(task.url).hostname or ""
            if needs_slot and self._hosts[host] >= self._settings.max_per_host:
                continue
            del self._pending[task.task_id]
            run = launcher.launch(task, NO_LEASE)
            if run.holds_slot:
                self._hosts[run.host] += 1
                slots += 1
