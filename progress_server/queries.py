"""TaskQueries: everything the web layer reads about tasks (records, pages, history, live
progress, polling snapshots, finished files), so handlers never reach the store or the bus.

Visibility is decided here too: a task another key owns is NotFound, exactly like one that
does not exist.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from progress_server.auth import Principal
from progress_server.downloads_dir import DownloadsDir
from progress_server.errors import Conflict, NotFound
from progress_server.events import EventBus
from progress_server.models import JSON, Event, Progress, Task, TaskState
from progress_server.snapshots import TaskSnapshot
from progress_server.store import Store


@dataclass(frozen=True)
class TaskPage:
    tasks: list[Task]
    # The submission order to continue after, or None on the last page.
    next_after: int | None


class TaskQueries:
    def __init__(
        self,
        store: Store,
        bus: EventBus,
        downloads: DownloadsDir,
        transfer_view: Callable[[str], JSON] = lambda _task_id: {},
    ) -> None:
        self._store = store
        self._bus = bus
        self._downloads = downloads
        # The *extra* figures of a transfer under way (by task id), from the task's run.
        self._transfer_view = transfer_view

    async def get(self, task_id: str) -> Task | None:
        return await self._store.get_task(task_id)

    async def visible_task(self, who: Principal, task_id: str) -> Task:
        task = await self._store.get_task(task_id)
        if task is None or not who.may_see(task.owner_key_id):
            raise NotFound("no such task")
        return task

    async def list_tasks(
        self,
        who: Principal,
        states: Sequence[TaskState] = (),
        limit: int = 50,
        after: int = 0,
        newest_first: bool = False,
    ) -> TaskPage:
        # One extra row tells whether another page exists without a second query.
        found = await self._store.list_tasks(
            who.owner_filter, states, limit + 1, after, newest_first=newest_first
        )
        more = len(found) > limit
        return TaskPage(found[:limit], found[limit - 1].order if more else None)

    def live_progress(self, task: Task) -> Progress | None:
        """The task's progress as the last event told it (fresher than the stored row)."""
        snapshot = self._bus.snapshots.get(task.task_id)
        return snapshot.progress if snapshot else None

    def live_fields(self, task: Task) -> JSON:
        """The record's *extra* figures of a download under way: `connections` and, when it
        is split, `segments`."""
        return self._transfer_view(task.task_id)

    def snapshot(self, who: Principal, task_id: str) -> TaskSnapshot | None:
        """The polling snapshot of a task this key may see (no SQL: polled often)."""
        snapshot = self._bus.snapshots.get(task_id)
        if snapshot is None or not who.may_see(snapshot.owner_key_id):
            return None
        return snapshot

    @property
    def last_seq(self) -> int:
        return self._bus.last_seq

    async def history(self, who: Principal, after_seq: int, limit: int) -> list[Event]:
        """Stored events of every task this key may see, after `after_seq`."""
        return await self._bus.history(after_seq, owner_key_id=who.owner_filter, limit=limit)

    async def task_history(self, task: Task, after_seq: int, limit: int) -> list[Event]:
        return await self._bus.history(after_seq, task_ids=[task.task_id], limit=limit)

    def finished_file(self, task: Task) -> Path:
        """The completed task's file on disk."""
        if task.is_playlist:
            raise Conflict("a playlist has no file of its own; each entry has one")
        if task.state is not TaskState.COMPLETED or not task.filename:
            raise Conflict(f"the task is {task.state.value}; its file is ready once completed")
        path = self._downloads.finished_file(task)
        if path is None:
            raise NotFound("the file is no longer on disk")
        return path
