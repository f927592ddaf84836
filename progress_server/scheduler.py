"""Who runs when: submission, the user's actions (pause, resume, cancel, retry, delete),
this server's runs, and recovery after a restart.

Which task runs next is the Coordinator's to say (coordination.py: an in-memory queue on
SQLite; claims from the shared queue in cluster mode). Each task runs as a TaskRun
(runner.py); every state change goes through TaskLifecycle, which checks it against the
transition table (transitions.py) and persists it with its event before anyone is told.
The actions refuse with domain errors (errors.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid

from progress_server import transitions
from progress_server.coordination import Coordinator, LeaseLost, LocalCoordinator, RunLease
from progress_server.downloads_dir import DownloadsDir
from progress_server.engine import Downloader
from progress_server.errors import Conflict, IdempotencyConflict, ShuttingDown
from progress_server.events import EventBus
from progress_server.lifecycle import TaskLifecycle, log_deleted, log_submitted
from progress_server.media import source as media_source
from progress_server.models import (
    JSON,
    ErrorType,
    Event,
    EventName,
    Progress,
    Task,
    TaskState,
    error_body,
)
from progress_server.new_task import NewTask
from progress_server.playlists import Playlists
from progress_server.processing import Pipeline
from progress_server.queries import TaskQueries
from progress_server.runner import RunContext, StopReason, TaskRun
from progress_server.settings import Settings
from progress_server.store import DuplicateSubmission, Store, TaskChange

log = logging.getLogger("progress_server.tasks")

IDEMPOTENCY_WINDOW = 24 * 3600
# How a refusal names what was asked for.
_VERBS = {TaskState.CANCELLED: "cancelled", TaskState.PAUSED: "paused"}


class Scheduler:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        bus: EventBus,
        downloader: Downloader,
        pipeline: Pipeline,
        coordinator: Coordinator | None = None,
    ) -> None:
        self.settings = settings
        self._store = store
        self._bus = bus
        self._downloader = downloader
        # Which task runs here next: an in-memory queue, or claims in a cluster.
        self.coordinator = coordinator or LocalCoordinator(settings, store)
        self.downloads = DownloadsDir(settings.downloads_dir, store)
        self.lifecycle = TaskLifecycle(bus, self.coordinator.writes)
        self.queries = TaskQueries(store, bus, self.downloads, self._transfer_view)
        self.playlists = Playlists(
            store, bus, self.lifecycle, settings.progress_interval, self, self.coordinator.exclusive
        )
        self._run_context = RunContext(
            settings, self.lifecycle, bus, downloader, pipeline, self.downloads, self.playlists
        )
        self.accepting = False
        self._running: dict[str, TaskRun] = {}
        # Two requests carrying one Idempotency-Key at once must get one task.
        self._submit_lock = asyncio.Lock()
        self._background: list[asyncio.Task[None]] = []

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        self.downloads.create()
        unfinished = []
        after = 0
        while batch := await self._store.list_tasks(None, limit=1000, after_order=after):
            for task in batch:
                self._bus.snapshots.load(task)
                self.playlists.load(task)
                # A playlist's parent has no run of its own: it follows its entries.
                if task.state.is_active and not task.is_playlist:
                    unfinished.append(task)
            after = batch[-1].order
        await self.coordinator.start(self, unfinished)
        self._background = [
            asyncio.create_task(self._tick_progress(), name="progress-ticker"),
            asyncio.create_task(self._flush_snapshots(), name="snapshot-flusher"),
        ]
        await self.playlists.start()
        self.accepting = True
        self.coordinator.wake()

    async def recover(self, task: Task) -> Task:
        """An unfinished task found at start-up, made ready to run again."""
        if self.downloads.has_part(task):
            task.downloaded_bytes = await self._kept_bytes(task)
        if task.state is TaskState.PROCESSING:
            log.debug("task %s: processing again after restart", task.task_id)
        elif task.state is TaskState.DOWNLOADING:
            await self.lifecycle.transition(
                task,
                EventName.QUEUED,
                TaskState.PENDING,
                {"recovered": True},
                progress=Progress(task.downloaded_bytes, task.total_bytes),
                change=TaskChange(downloaded_bytes=task.downloaded_bytes),
            )
        return task

    async def stop(self) -> None:
        """Stop all work, keeping every task's state for the next start."""
        self.accepting = False
        await self.playlists.stop()
        for job in self._background:
            job.cancel()
        for job in self._background:
            with contextlib.suppress(asyncio.CancelledError):
                await job
        runs = list(self._running.values())
        await asyncio.gather(*(run.stop(StopReason.SHUTDOWN) for run in runs))
        await self.coordinator.stop(runs)

    # -- submission --------------------------------------------------------------------

    async def submit(self, owner_key_id: int, new: NewTask) -> tuple[Task, bool]:
        """Create a task, or return the one an Idempotency-Key already names (created=False)."""
        self._require_accepting()
        now = time.time()
        task = Task(
            task_id=str(uuid.uuid4()),
            owner_key_id=owner_key_id,
            url=new.url,
            filename=None,
            state=TaskState.PENDING,
            created_at=now,
            updated_at=now,
            sha256=new.sha256.lower() if new.sha256 else None,
            requested_filename=new.filename,
            options=new.options or {},
            request_hash=new.fingerprint(),
        )
        task.source = await media_source.choose_source(
            new.source, new.url, task.options.get("format")
        )

        async def insert(event: Event) -> Event:
            return await self.coordinator.writes.insert(task, new.idempotency_key, event)

        async def publish_queued(filename: str | None = None) -> None:
            task.filename = filename
            await self._bus.publish(
                EventName.QUEUED,
                task.task_id,
                owner_key_id,
                TaskState.PENDING,
                progress=Progress(),
                persist=insert,
            )

        # Only a key needs the lock: others are stored side by side (in one group commit).
        async with self._submit_lock if new.idempotency_key else contextlib.nullcontext():
            # Looked up under the lock that also covers the insert: two requests carrying
            # one key at once must get one task, not a UNIQUE violation.
            if new.idempotency_key:
                existing = await self._by_key(owner_key_id, new.idempotency_key, now)
                if existing is not None:
                    return _repeated(existing, task), False
                await self._store.clear_idempotency_key(owner_key_id, new.idempotency_key)
            try:
                if new.filename:
                    await self.downloads.claim_for_new(new.filename, publish_queued)
                else:
                    await publish_queued()
            except DuplicateSubmission:
                # Another node stored a task under this key since the look-up above.
                existing = await self._by_key(owner_key_id, new.idempotency_key or "", now)
                if existing is None:
                    raise
                return _repeated(existing, task), False
        log_submitted(task)
        self.coordinator.queue(task)
        return task, True

    async def _kept_bytes(self, task: Task) -> int:
        """What a resume keeps (the stored count may lag behind): yt-dlp's for media."""
        if task.is_media:
            return self.downloads.part_size(task)
        return await self._downloader.kept_bytes(task)

    def _transfer_view(self, task_id: str) -> JSON:
        return run.transfer_view() if (run := self._running.get(task_id)) else {}

    async def _by_key(self, owner_key_id: int, key: str, now: float) -> Task | None:
        since = now - IDEMPOTENCY_WINDOW
        return await self._store.task_by_idempotency_key(owner_key_id, key, since)

    def _require_accepting(self) -> None:
        if not self.accepting:
            raise ShuttingDown()

    # -- actions -----------------------------------------------------------------------

    async def cancel(self, task: Task) -> Task:
        task = await self._stop_for(task, TaskState.CANCELLED, StopReason.CANCEL)
        if task.is_playlist:
            return await self.playlists.cancel(task)
        if task.state is TaskState.CANCELLED:
            return task
        await self.lifecycle.transition(
            task,
            EventName.CANCELLED,
            TaskState.CANCELLED,
            error_body(ErrorType.CANCELLED, "cancelled by the user"),
            change=TaskChange(downloaded_bytes=task.downloaded_bytes),
        )
        await self.downloads.remove_scratch(task.task_id)
        return task

    async def pause(self, task: Task) -> Task:
        task = await self._stop_for(task, TaskState.PAUSED, StopReason.PAUSE)
        if task.is_playlist and task.state is not TaskState.PAUSED:
            return await self.playlists.pause(task)
        if task.state is TaskState.PAUSED:
            return task
        await self.lifecycle.transition(
            task,
            EventName.PAUSED,
            TaskState.PAUSED,
            change=TaskChange(downloaded_bytes=task.downloaded_bytes),
        )
        return task

    async def _stop_for(self, task: Task, target: TaskState, reason: StopReason) -> Task:
        """Stop the task's run so that it may become `target`; the task as it is then (as
        it was, when it is in `target` already). Conflict, with nothing changed, when the
        table does not let `target` follow its state, before or after the stop."""
        task = self._current(task)
        if task.state is target:
            return task
        if not transitions.may_follow(task.state, target):
            raise Conflict(f"a {task.state.value} task cannot be {_VERBS[target]}")
        task = await self._halt(task, reason)
        if not transitions.may_follow(task.state, target):
            # It moved on (to processing, or an end) while it was being stopped.
            if task.state.is_active:
                self.enqueue(task)
            raise Conflict(f"the task is already {task.state.value}")
        return task

    async def resume(self, task: Task) -> Task:
        """Resume is how a paused task goes back to the queue (retry is for ended ones)."""
        self._require_accepting()
        task = self._current(task)
        if task.state is not TaskState.PAUSED:
            if task.state.is_active:
                return task
            raise Conflict(f"a {task.state.value} task cannot be resumed; retry it instead")
        if task.is_playlist:
            return await self.playlists.resume(task)
        return await self._requeue(task)

    async def retry(self, task: Task) -> Task:
        """Retry is how an ended task goes back to the queue, where the table allows it."""
        self._require_accepting()
        task = self._current(task)
        if not (task.state.is_final and transitions.may_follow(task.state, TaskState.PENDING)):
            raise Conflict(f"only failed or cancelled tasks can be retried, not {task.state.value}")
        if task.is_playlist:
            return await self.playlists.retry(task)
        return await self._requeue(task)

    async def _requeue(self, task: Task) -> Task:
        task.downloaded_bytes = await self._kept_bytes(task)
        await self.lifecycle.transition(
            task,
            EventName.QUEUED,
            TaskState.PENDING,
            progress=Progress(task.downloaded_bytes, task.total_bytes),
            change=TaskChange(
                downloaded_bytes=task.downloaded_bytes, error=None, result=None, attempts=0
            ),
        )
        self.enqueue(task)
        return task

    async def delete(self, task: Task, delete_file: bool) -> None:
        task = await self._halt(self._current(task), StopReason.DELETE)
        if task.is_playlist:
            await self.playlists.delete(task, delete_file)
            return
        await self.downloads.delete_files(task, finished_too=delete_file)
        await self._store.delete_task(task.task_id)
        self._bus.snapshots.remove(task.task_id)
        log_deleted(task, delete_file)
        if task.parent_id is not None:
            await self.playlists.entry_deleted(task)

    def _current(self, task: Task) -> Task:
        """The scheduler's own copy of a queued or running task (what its run changes), a
        playlist's own copy of its parent, else the one given (read from the store)."""
        run = self._running.get(task.task_id)
        if run is not None:
            return run.task
        return self.coordinator.queued(task.task_id) or self.playlists.owns(task) or task

    async def _halt(self, task: Task, reason: StopReason) -> Task:
        """Take a task out of the queue or stop its run; returns it as it is afterwards."""
        self.coordinator.unqueue(task.task_id)
        run = self._running.get(task.task_id)
        if run is None:
            return task
        await run.stop(reason)
        return run.task

    # -- running (the Coordinator's Launcher) ------------------------------------------

    def enqueue(self, task: Task) -> None:
        """Queue a task to run (a new playlist entry, a task taken up again)."""
        self.coordinator.queue(task)

    def launch(self, task: Task, lease: RunLease) -> TaskRun:
        run = TaskRun(task, self._run_context, self._release_slot, lease)
        # A task recovered or taken over in processing needs no download slot.
        run.holds_slot = task.state is not TaskState.PROCESSING
        self._running[task.task_id] = run
        run.start(self._finished)
        return run

    async def abandon(self, task_id: str) -> None:
        run = self._running.get(task_id)
        if run is not None:
            await run.stop(StopReason.LEASE_LOST)

    def _release_slot(self, run: TaskRun) -> None:
        if run.holds_slot:
            run.holds_slot = False
            self.coordinator.slot_freed(run)

    def _finished(self, run: TaskRun) -> None:
        if self._running.get(run.task.task_id) is run:
            del self._running[run.task.task_id]
        self._release_slot(run)
        self.coordinator.run_ended(run)

    @property
    def active_downloads(self) -> int:
        return sum(1 for run in self._running.values() if run.holds_slot)

    # -- background --------------------------------------------------------------------

    async def _tick_progress(self) -> None:
        # Keeps speed and ETA honest while no bytes arrive (a stall reads as slowing down,
        # not as frozen at the last speed).
        while True:
            await asyncio.sleep(self.settings.progress_interval)
            for run in list(self._running.values()):
                if run.transferring and run.tracker.seconds_since_last_byte() >= 0.5:
                    if run.tracker.due():
                        # A run that lost its task says nothing more; it stops on its own.
                        with contextlib.suppress(LeaseLost):
                            await run.progress.emit()

    async def _flush_snapshots(self) -> None:
        while True:
            await asyncio.sleep(self.settings.snapshot_interval)
            try:
                await self.coordinator.save_snapshots(
                    [run for run in self._running.values() if run.transferring]
                )
            except Exception:
                log.exception("could not save progress snapshots")


def _repeated(existing: Task, new: Task) -> Task:
    """The task an Idempotency-Key already made, if `new` is the same request again."""
    if existing.request_hash not in (None, new.request_hash):
        raise IdempotencyConflict(
            "this Idempotency-Key already made a task from a different request; use a new "
            "key for a new request"
        )
    return existing
