"""Playlists: a playlist URL's parent task, its entries as tasks of their own, and the parent's
state and progress following theirs.

A media run that finds a playlist calls `expand`: each entry becomes an ordinary task (it
queues, runs, retries and fails on its own) and the parent keeps their ids as its `entries`.
From then on the parent has no run: it follows its entries' events, taking the state
playlist_rules decides through the transition table's own steps, and showing one combined
progress. The user's actions on the parent act on its entries (cancelling it cancels the
unfinished ones). Everything is stored the way any task is, so it all survives kill -9.
In a cluster any node may settle a parent, one at a time (the coordinator's `exclusive`),
each from the parent as stored: a step is taken once, whichever node takes it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from progress_server import filenames
from progress_server.errors import Conflict
from progress_server.events import EventBus
from progress_server.lifecycle import TaskLifecycle, log_submitted
from progress_server.media.results import MediaPlaylist, PlaylistEntry
from progress_server.models import (
    JSON,
    ErrorType,
    Event,
    EventName,
    Progress,
    Task,
    TaskState,
    completed_body,
    error_body,
)
from progress_server.playlist_rules import (
    EVENT_FOR_STATE,
    EntryFigures,
    combined_progress,
    entry_task_id,
    memberships,
    new_entry,
    playlist_state,
    steps_to,
)
from progress_server.store import Store, TaskChange

log = logging.getLogger("progress_server.tasks")


class EntryActions(Protocol):
    """The scheduler's actions, applied to one entry as if its user had asked."""

    def enqueue(self, task: Task) -> None: ...
    async def cancel(self, task: Task) -> Task: ...
    async def pause(self, task: Task) -> Task: ...
    async def resume(self, task: Task) -> Task: ...
    async def retry(self, task: Task) -> Task: ...
    async def delete(self, task: Task, delete_file: bool) -> None: ...


class Playlists:
    def __init__(
        self,
        store: Store,
        bus: EventBus,
        lifecycle: TaskLifecycle,
        interval: float,
        entries: EntryActions,
        exclusive: Callable[[str], AbstractAsyncContextManager[None]] | None = None,
    ) -> None:
        self._store = store
        self._exclusive = exclusive or (lambda _name: contextlib.nullcontext())
        self._bus = bus
        self._lifecycle = lifecycle
        self._interval = interval
        self._entries = entries
        # Parents whose entries exist, by task id; the parent's own copy of its task.
        self._parents: dict[str, Task] = {}
        self._parent_of: dict[str, str] = {}
        self._locks: collections.defaultdict[str, asyncio.Lock] = collections.defaultdict(
            asyncio.Lock
        )
        # The fraction each parent has shown, so its percentage never goes back.
        self._floors: dict[str, float] = {}
        self._shown: dict[str, JSON] = {}
        self._dirty: set[str] = set()
        self._wake = asyncio.Event()
        self._follower: asyncio.Task[None] | None = None
        self._unsubscribe: Callable[[], None] | None = None

    # -- start and stop ----------------------------------------------------------------

    def load(self, task: Task) -> None:
        """Know a stored task's place in a playlist (at start, before `start`)."""
        if task.parent_id is not None:
            self._parent_of[task.task_id] = task.parent_id
        if task.entries is not None:
            self._parents[task.task_id] = task
            for entry_id in task.entries:
                self._parent_of[entry_id] = task.task_id

    def owns(self, task: Task) -> Task | None:
        """The parent's own copy of a playlist task, or None for any other task."""
        return self._parents.get(task.task_id) if task.entries is not None else None

    async def start(self) -> None:
        self._unsubscribe = self._bus.subscribe(self._on_event)
        self._follower = asyncio.create_task(self._follow(), name="playlist-follower")
        # Entries may have moved on while the server was down (or been recovered).
        self._dirty.update(self._parents)
        self._wake.set()

    async def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        if self._follower is not None:
            self._follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follower

    # -- expansion ---------------------------------------------------------------------

    async def expand(self, parent: Task, playlist: MediaPlaylist) -> None:
        """Make each entry a task of its own and give the parent their ids.

        Entries are stored one by one under ids derived from the parent, so a run after a
        crash half way finds the stored ones and creates only the rest.
        """
        ids: list[str] = []
        for entry in playlist.entries:
            task_id = entry_task_id(parent.task_id, entry.index)
            if task_id in ids:
                continue
            ids.append(task_id)
            self._parent_of[task_id] = parent.task_id
            if await self._store.get_task(task_id) is None:
                await self._create_entry(parent, entry, task_id)
        title = filenames.sanitise(playlist.title or "") or None
        body = {"entries": ids, "playlist": {"title": playlist.title, "count": len(ids)}}
        change = TaskChange(entries=ids, filename=parent.filename or title)
        await self._lifecycle.transition(
            parent, EventName.STARTED, TaskState.DOWNLOADING, body, change=change
        )
        self._parents[parent.task_id] = parent
        self._mark(parent.task_id)

    async def _create_entry(self, parent: Task, entry: PlaylistEntry, task_id: str) -> None:
        task = new_entry(parent, entry, task_id, time.time())

        async def insert(event: Event) -> Event:
            return await self._store.insert_task(task, None, event)

        await self._bus.publish(
            EventName.QUEUED,
            task_id,
            task.owner_key_id,
            TaskState.PENDING,
            {"parent_id": parent.task_id, "playlist_index": entry.index},
            progress=Progress(),
            persist=insert,
        )
        log_submitted(task)
        self._entries.enqueue(task)

    # -- following the entries ---------------------------------------------------------

    def _on_event(self, event: Event) -> None:
        # The playlist may have been made on another node: its events say what belongs.
        for entry_id, named in memberships(event):
            self._parent_of.setdefault(entry_id, named)
            self._mark(named)
        parent_id = self._parent_of.get(event.task_id)
        if parent_id is not None:
            self._mark(parent_id)

    def _mark(self, parent_id: str) -> None:
        self._dirty.add(parent_id)
        self._wake.set()

    async def _follow(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            dirty, self._dirty = self._dirty, set()
            for parent_id in dirty:
                try:
                    await self.settle(parent_id)
                except Exception:
                    log.exception("playlist %s: could not follow its entries", parent_id)
            # At most one progress event per parent per interval, as for any task.
            await asyncio.sleep(self._interval)

    def _figures(self, parent: Task) -> list[EntryFigures]:
        figures = []
        for entry_id in parent.entries or ():
            snapshot = self._bus.snapshots.get(entry_id)
            if snapshot is not None:
                p = snapshot.progress
                figures.append(
                    EntryFigures(snapshot.state, p.downloaded_bytes, p.total_bytes, p.speed_bps)
                )
        return figures

    async def settle(self, parent_id: str) -> None:
        """Bring the parent to the state and progress its entries make now."""
        async with self._locks[parent_id], self._exclusive(f"playlist {parent_id}"):
            parent = await self._as_stored(parent_id)
            if parent is not None:
                await self._settle(parent)

    async def _as_stored(self, parent_id: str) -> Task | None:
        """The parent's own copy, made to say what the store says (in a cluster another
        node may have moved it on, or made it)."""
        stored = await self._store.get_task(parent_id)
        if stored is None or stored.entries is None:
            if stored is None:
                self._parents.pop(parent_id, None)
            return self._parents.get(parent_id)
        parent = self._parents.setdefault(parent_id, stored)
        for field in dataclasses.fields(stored):
            setattr(parent, field.name, getattr(stored, field.name))
        for entry_id in stored.entries:
            self._parent_of.setdefault(entry_id, parent_id)
        return parent

    async def _settle(self, parent: Task) -> None:
        figures = self._figures(parent)
        if not figures:
            return
        floor = self._floors.get(parent.task_id, 0.0)
        progress, self._floors[parent.task_id] = combined_progress(figures, floor)
        target = playlist_state(parent.state, [f.state for f in figures])
        if parent.state is TaskState.DOWNLOADING:
            # The last progress before the parent leaves downloading shows where it got.
            await self._publish_progress(parent, progress)
        for state in steps_to(parent.state, target) or ():
            body, change = await self._entering(parent, state, progress)
            if state is TaskState.PENDING:
                self._floors.pop(parent.task_id, None)
            await self._lifecycle.transition(
                parent, EVENT_FOR_STATE[state], state, body, progress=progress, change=change
            )

    async def _publish_progress(self, parent: Task, progress: Progress) -> None:
        wire = progress.to_wire()
        if self._shown.get(parent.task_id) == wire:
            return
        self._shown[parent.task_id] = wire
        await self._bus.publish(
            EventName.PROGRESS,
            parent.task_id,
            parent.owner_key_id,
            TaskState.DOWNLOADING,
            {"progress": wire},
            progress=progress,
        )

    async def _entering(
        self, parent: Task, state: TaskState, progress: Progress
    ) -> tuple[JSON | None, TaskChange]:
        """The event body and stored change for the parent entering `state`."""
        figures = TaskChange(
            downloaded_bytes=progress.downloaded_bytes, total_bytes=progress.total_bytes
        )
        entries = [t for t in [await self._store.get_task(i) for i in parent.entries or ()] if t]
        if state is TaskState.FAILED:
            failed = next(t for t in entries if t.state is TaskState.FAILED)
            error: JSON = failed.error or {}
            message = (
                f"entry {failed.playlist_index} of {len(entries)} failed: "
                f"{error.get('message', 'no reason given')}"
            )
            kind = _error_type(error.get("type"))
            body = error_body(kind, message, retryable=False, entry=failed.task_id)
            return body, _with(figures, error=body["error"])
        if state is TaskState.COMPLETED:
            durations = [(t.result or {}).get("duration_seconds") for t in entries]
            known = [int(d) for d in durations if isinstance(d, int | float)]
            duration = sum(known) if len(known) == len(durations) else None
            name = parent.filename or "playlist"
            body = completed_body(name, progress.downloaded_bytes, duration, entries=len(entries))
            return body, _with(figures, result=body["result"], error=None)
        if state is TaskState.CANCELLED:
            body = error_body(ErrorType.CANCELLED, "every entry of the playlist was cancelled")
            return body, _with(figures, error=body["error"])
        if state is TaskState.PENDING:
            return None, _with(figures, error=None, result=None)
        return None, figures

    # -- the user's actions on a parent ------------------------------------------------

    async def _entry_tasks(self, parent: Task) -> list[Task]:
        found = [await self._store.get_task(i) for i in parent.entries or ()]
        return [t for t in found if t is not None]

    async def cancel(self, parent: Task) -> Task:
        """Cancel every entry that has not finished, then the parent itself."""
        async with self._locks[parent.task_id]:
            parent = self._parents.get(parent.task_id, parent)
            for entry in await self._entry_tasks(parent):
                if entry.state.is_active or entry.state is TaskState.PAUSED:
                    await _unless_moved_on(self._entries.cancel(entry))
            if parent.state is not TaskState.CANCELLED:
                await self._lifecycle.transition(
                    parent,
                    EventName.CANCELLED,
                    TaskState.CANCELLED,
                    error_body(ErrorType.CANCELLED, "cancelled by the user"),
                )
            return parent

    async def pause(self, parent: Task) -> Task:
        async with self._locks[parent.task_id]:
            parent = self._parents.get(parent.task_id, parent)
            entries = await self._entry_tasks(parent)
            if any(e.state is TaskState.PROCESSING for e in entries):
                raise Conflict("entries of this playlist are processing, which cannot be paused")
            for entry in entries:
                if entry.state in (TaskState.PENDING, TaskState.DOWNLOADING):
                    await _unless_moved_on(self._entries.pause(entry))
            await self._settle(parent)
            return parent

    async def resume(self, parent: Task) -> Task:
        return await self._restart(parent, (TaskState.PAUSED,), self._entries.resume)

    async def retry(self, parent: Task) -> Task:
        ended = (TaskState.FAILED, TaskState.CANCELLED)
        return await self._restart(parent, ended, self._entries.retry)

    async def _restart(self, parent: Task, states: tuple[TaskState, ...], act: Any) -> Task:
        async with self._locks[parent.task_id]:
            parent = self._parents.get(parent.task_id, parent)
            for entry in await self._entry_tasks(parent):
                if entry.state in states:
                    await _unless_moved_on(act(entry))
            await self._settle(parent)
            return parent

    async def delete(self, parent: Task, delete_file: bool) -> None:
        """Delete the entries (and with `delete_file` their files), then the parent."""
        async with self._locks[parent.task_id]:
            parent = self._parents.pop(parent.task_id, parent)
            for entry_id in parent.entries or ():
                self._parent_of.pop(entry_id, None)
        for entry in await self._entry_tasks(parent):
            await self._entries.delete(entry, delete_file)
        await self._store.delete_task(parent.task_id)
        self._bus.snapshots.remove(parent.task_id)
        self._forget(parent.task_id)

    async def entry_deleted(self, entry: Task) -> None:
        """An entry deleted on its own leaves its parent's list."""
        parent_id = self._parent_of.pop(entry.task_id, None)
        if parent_id is None:
            return
        async with self._locks[parent_id]:
            parent = self._parents.get(parent_id)
            if parent is not None and parent.entries is not None:
                remaining = [i for i in parent.entries if i != entry.task_id]
                await self._lifecycle.update(parent, TaskChange(entries=remaining))
        self._mark(parent_id)

    def _forget(self, parent_id: str) -> None:
        self._floors.pop(parent_id, None)
        self._shown.pop(parent_id, None)
        self._locks.pop(parent_id, None)


def _with(change: TaskChange, **fields: Any) -> TaskChange:
    return dataclasses.replace(change, **fields)


def _error_type(value: Any) -> ErrorType:
    try:
        return ErrorType(value)
    except ValueError:
        return ErrorType.INTERNAL_ERROR


async def _unless_moved_on(action: Any) -> None:
    """Apply an action to an entry that may have ended meanwhile (then it is left as is)."""
    with contextlib.suppress(Conflict):
        await action
