"""Who runs when: the queue, concurrency limits, pause/cancel/retry/delete, and recovery.

Every state change goes through `transition`, which persists the task change and its event
in one transaction before anyone is told (see EventBus.publish).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from progress_server import filenames
from progress_server.downloader import Downloader, DownloadError
from progress_server.events import EventBus
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
from progress_server.partfile import fsync_dir
from progress_server.processing import Pipeline, ProcessingContext, ProcessingError, transcode
from progress_server.settings import Settings
from progress_server.store import SnapshotRow, Store, TaskChange
from progress_server.tracker import ProgressTracker

log = logging.getLogger("progress_server.tasks")

IDEMPOTENCY_WINDOW = 24 * 3600


class Conflict(Exception):
    """The task is in a state that does not allow the action (HTTP 409)."""


class StopReason(enum.Enum):
    CANCEL = "cancel"
    PAUSE = "pause"
    DELETE = "delete"
    SHUTDOWN = "shutdown"


@dataclass
class NewTask:
    url: str
    filename: str | None = None
    sha256: str | None = None
    options: JSON | None = None
    idempotency_key: str | None = None


class RunningTask:
    """One task's run; also the observer its transfer reports to."""

    def __init__(self, scheduler: Scheduler, task: Task) -> None:
        self.scheduler = scheduler
        self.task = task
        self.tracker = ProgressTracker(
            task.total_bytes, task.downloaded_bytes, scheduler.settings.progress_interval
        )
        self.stop_reason: StopReason | None = None
        self.runner: asyncio.Task[None] | None = None
        self.holds_slot = False
        self.host = urlsplit(task.url).hostname or ""
        self.transferring = False
        self._last_progress: JSON | None = None
        self._last_processing_report = float("-inf")
        self._last_processing: JSON | None = None

    # -- TransferObserver ------------------------------------------------------------

    async def choose_filename(self, content_disposition: str | None) -> str:
        task = self.task
        wanted = filenames.choose(
            task.requested_filename, content_disposition, task.url, task.task_id
        )
        return await self.scheduler.claim_filename(task.task_id, wanted)

    async def response_started(
        self, offset: int, total: int | None, etag: str | None, last_modified: str | None
    ) -> None:
        self.task.total_bytes = total
        self.task.downloaded_bytes = offset
        self.tracker.restart(offset, total)
        self.transferring = True
        await self.scheduler.store.update_task(
            self.task.task_id,
            TaskChange(
                etag=etag, last_modified=last_modified, total_bytes=total, downloaded_bytes=offset
            ),
        )
        await self.emit_progress(force=True)

    async def restarted_from_zero(self, reason: str) -> None:
        # Said in the history as an *extra* started event, so a reader sees why bytes fell.
        await self.scheduler.transition(
            self.task,
            EventName.STARTED,
            TaskState.DOWNLOADING,
            {"restarted_from_zero": True, "reason": reason},
        )

    async def received(self, nbytes: int) -> None:
        self.tracker.add(nbytes)
        if self.tracker.due():
            await self.emit_progress()

    async def attempt_failed(self, error: DownloadError, attempt: int, delay: float) -> None:
        self.transferring = False
        body = error_body(
            error.error_type,
            error.message,
        )
        body["retryable"] = True
        body["attempt"] = attempt
        body["retry_in_seconds"] = round(delay, 2)
        await self.scheduler.transition(
            self.task,
            EventName.ERROR,
            TaskState.DOWNLOADING,
            body,
            attempts=self.task.attempts + 1,
        )

    # -- ProgressReporter (processing) -----------------------------------------------

    async def processing_progress(
        self, step: str, percentage: float | None, eta_seconds: int | None
    ) -> None:
        # Throttled like download progress; a step's 100 % always gets through.
        now = time.monotonic()
        interval = self.scheduler.settings.progress_interval
        if now - self._last_processing_report < interval and percentage != 100.0:
            return
        report = {"step": step, "percentage": percentage, "eta_seconds": eta_seconds}
        if report == self._last_processing:
            return
        self._last_processing_report = now
        self._last_processing = report
        body = {"processing": report}
        await self.scheduler.bus.publish(
            EventName.PROCESSING,
            self.task.task_id,
            self.task.owner_key_id,
            TaskState.PROCESSING,
            body,
        )

    async def place_output(self, scratch: Path, wanted: str) -> Path:
        return await self.scheduler.place_file(scratch, wanted)

    # -- progress ----------------------------------------------------------------------

    async def emit_progress(self, force: bool = False) -> None:
        progress = self.tracker.snapshot()
        wire = progress.to_wire()
        if not force and wire == self._last_progress:
            return
        if force:
            # Forced frames (the first of an attempt, the final 100 %) keep the
            # --progress-interval spacing too: wait out the rest of it, then count as sent.
            delay = self.tracker.until_due()
            if delay > 0:
                await asyncio.sleep(delay)
                progress = self.tracker.snapshot()
                wire = progress.to_wire()
            self.tracker.mark_emitted()
        self._last_progress = wire
        await self.scheduler.bus.publish(
            EventName.PROGRESS,
            self.task.task_id,
            self.task.owner_key_id,
            TaskState.DOWNLOADING,
            {"progress": wire},
            progress=progress,
        )


class Scheduler:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        bus: EventBus,
        downloader: Downloader,
        pipeline: Pipeline,
    ) -> None:
        self.settings = settings
        self.store = store
        self.bus = bus
        self.downloader = downloader
        self.pipeline = pipeline
        self.accepting = False
        self._running: dict[str, RunningTask] = {}
        self._pending: dict[str, Task] = {}
        self._hosts: Counter[str] = Counter()
        self._names_lock = asyncio.Lock()
        self._background: list[asyncio.Task[None]] = []

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        self.settings.downloads_dir.mkdir(parents=True, exist_ok=True)
        after = 0
        while batch := await self.store.list_tasks(None, limit=1000, after_order=after):
            for task in batch:
                self.bus.snapshots.load(task)
                if task.state.is_active:
                    await self._recover(task)
            after = batch[-1].order
        self._background = [
            asyncio.create_task(self._tick_progress(), name="progress-ticker"),
            asyncio.create_task(self._flush_snapshots(), name="snapshot-flusher"),
        ]
        self.accepting = True
        self._pump()

    async def _recover(self, task: Task) -> None:
        part = self._part_path(task)
        if part is not None and part.exists():
            # The .part file is the truth after a crash; the stored count may lag behind it.
            task.downloaded_bytes = part.stat().st_size
        if task.state is TaskState.PROCESSING:
            log.debug("task %s: processing again after restart", task.task_id)
        elif task.state is TaskState.DOWNLOADING:
            await self.transition(
                task,
                EventName.QUEUED,
                TaskState.PENDING,
                {"recovered": True},
                progress=Progress(task.downloaded_bytes, task.total_bytes),
                downloaded_bytes=task.downloaded_bytes,
            )
        self._pending[task.task_id] = task

    async def stop(self) -> None:
        """Stop all work, keeping every task's state for the next start."""
        self.accepting = False
        for job in self._background:
            job.cancel()
        for job in self._background:
            with contextlib.suppress(asyncio.CancelledError):
                await job
        running = list(self._running.values())
        await asyncio.gather(*(self._stop_run(rt, StopReason.SHUTDOWN) for rt in running))
        await self.store.save_snapshots(
            SnapshotRow(rt.task.task_id, rt.tracker.downloaded_bytes, rt.tracker.total_bytes)
            for rt in running
            if rt.task.state is TaskState.DOWNLOADING
        )

    # -- submission ----------------------------------------------------------------------

    async def submit(self, owner_key_id: int, new: NewTask) -> tuple[Task, bool]:
        """Create a task, or return the one an Idempotency-Key already names (created=False)."""
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
        )
        async with self._names_lock:
            # Looked up under the lock that also covers the insert: two requests carrying one
            # Idempotency-Key at once must get one task, not a UNIQUE violation.
            if new.idempotency_key:
                existing = await self.store.task_by_idempotency_key(
                    owner_key_id, new.idempotency_key, now - IDEMPOTENCY_WINDOW
                )
                if existing is not None:
                    return existing, False
                await self.store.clear_idempotency_key(owner_key_id, new.idempotency_key)
            if new.filename:
                task.filename = await self._unique_name(new.filename)

            async def persist(event: Event) -> None:
                await self.store.insert_task(task, new.idempotency_key, event)

            await self.bus.publish(
                EventName.QUEUED,
                task.task_id,
                owner_key_id,
                TaskState.PENDING,
                progress=Progress(),
                persist=persist,
            )
        log.info("task %s queued: %s", task.task_id, _redacted(task.url))
        self._pending[task.task_id] = task
        self._pump()
        return task, True

    async def claim_filename(self, task_id: str, wanted: str) -> str:
        """Pick a free name and record it, under the lock, so no two tasks get one name."""
        async with self._names_lock:
            name = await self._unique_name(wanted)
            await self.store.update_task(task_id, TaskChange(filename=name))
            return name

    async def place_file(self, scratch: Path, wanted: str) -> Path:
        """Move a processing output into the downloads folder under a name no task uses;
        the name and the file appear together, under the lock, so no two tasks share it."""
        async with self._names_lock:
            final = self.settings.downloads_dir / await self._unique_name(wanted)
            await asyncio.to_thread(_move_into_place, scratch, final)
            return final

    async def _unique_name(self, wanted: str) -> str:
        taken = await self.store.filenames_in_use()
        return filenames.unique(self.settings.downloads_dir, wanted, taken)

    # -- queries -----------------------------------------------------------------------

    async def get(self, task_id: str) -> Task | None:
        return await self.store.get_task(task_id)

    def live_progress(self, task: Task) -> Progress | None:
        snapshot = self.bus.snapshots.get(task.task_id)
        return snapshot.progress if snapshot else None

    # -- actions -----------------------------------------------------------------------

    async def cancel(self, task: Task) -> Task:
        if task.state is TaskState.COMPLETED:
            raise Conflict("the task has already completed")
        if task.state is TaskState.CANCELLED:
            return task
        task = await self._halt(task, StopReason.CANCEL)
        if task.state is TaskState.COMPLETED:
            raise Conflict("the task completed before it could be cancelled")
        await self.transition(
            task,
            EventName.CANCELLED,
            TaskState.CANCELLED,
            error_body(ErrorType.CANCELLED, "cancelled by the user"),
            downloaded_bytes=task.downloaded_bytes,
        )
        await self._remove_processing_output(task)
        return task

    async def pause(self, task: Task) -> Task:
        if task.state is TaskState.PAUSED:
            return task
        if task.state not in (TaskState.PENDING, TaskState.DOWNLOADING):
            raise Conflict(f"a {task.state.value} task cannot be paused")
        task = await self._halt(task, StopReason.PAUSE)
        if task.state.is_final:
            raise Conflict(f"the task is already {task.state.value}")
        await self.transition(
            task, EventName.PAUSED, TaskState.PAUSED, downloaded_bytes=task.downloaded_bytes
        )
        return task

    async def resume(self, task: Task) -> Task:
        if task.state is not TaskState.PAUSED:
            if task.state.is_active:
                return task
            raise Conflict(f"a {task.state.value} task cannot be resumed; retry it instead")
        return await self._requeue(task)

    async def retry(self, task: Task) -> Task:
        if task.state not in (TaskState.FAILED, TaskState.CANCELLED):
            raise Conflict(f"only failed or cancelled tasks can be retried, not {task.state.value}")
        return await self._requeue(task)

    async def _requeue(self, task: Task) -> Task:
        part = self._part_path(task)
        task.downloaded_bytes = part.stat().st_size if part and part.exists() else 0
        task.result = task.error = None
        await self.transition(
            task,
            EventName.QUEUED,
            TaskState.PENDING,
            progress=Progress(task.downloaded_bytes, task.total_bytes),
            downloaded_bytes=task.downloaded_bytes,
            error=None,
            result=None,
            attempts=0,
        )
        self._pending[task.task_id] = task
        self._pump()
        return task

    async def delete(self, task: Task, delete_file: bool) -> None:
        task = await self._halt(task, StopReason.DELETE)
        paths: list[Path] = []
        part = self._part_path(task)
        if part is not None:
            paths.append(part)
        if delete_file and task.filename:
            paths.append(self.settings.downloads_dir / task.filename)
            produced = (task.result or {}).get("filename")
            if produced and produced != task.filename:
                paths.append(self.settings.downloads_dir / filenames.sanitise(produced))
            # A transcode keeps the original download beside its output; both go.
            source = transcode.source_filename(task.result)
            if source:
                paths.append(self.settings.downloads_dir / filenames.sanitise(source))
        # In a thread: unlinking a multi-gigabyte file can hold the loop for a while.
        await asyncio.to_thread(_unlink_all, paths)
        await self._remove_processing_output(task)
        await self.store.delete_task(task.task_id)
        self.bus.snapshots.remove(task.task_id)
        log.info("task %s deleted%s", task.task_id, " with its file" if delete_file else "")

    async def _halt(self, task: Task, reason: StopReason) -> Task:
        """Take a task out of the queue or stop its run; returns its state afterwards."""
        self._pending.pop(task.task_id, None)
        rt = self._running.get(task.task_id)
        if rt is None:
            return task
        await self._stop_run(rt, reason)
        rt.task.downloaded_bytes = rt.tracker.downloaded_bytes
        return rt.task

    async def _stop_run(self, rt: RunningTask, reason: StopReason) -> None:
        rt.stop_reason = reason
        if rt.runner is not None and not rt.runner.done():
            rt.runner.cancel()
            await asyncio.wait([rt.runner])

    async def _remove_processing_output(self, task: Task) -> None:
        """Remove what a stopped transcode of this task may have left behind."""
        await asyncio.to_thread(transcode.remove_scratch, self.settings.downloads_dir, task.task_id)

    # -- running -----------------------------------------------------------------------

    def _pump(self) -> None:
        if not self.accepting:
            return
        slots = sum(1 for rt in self._running.values() if rt.holds_slot)
        for task in sorted(self._pending.values(), key=lambda t: t.order):
            if slots >= self.settings.max_concurrent:
                break
            rt = RunningTask(self, task)
            needs_slot = task.state is not TaskState.PROCESSING
            if needs_slot and self._hosts[rt.host] >= self.settings.max_per_host:
                continue
            del self._pending[task.task_id]
            if needs_slot:
                rt.holds_slot = True
                self._hosts[rt.host] += 1
                slots += 1
            self._running[task.task_id] = rt
            rt.runner = asyncio.create_task(self._run(rt), name=f"task-{task.task_id}")

    def _release_slot(self, rt: RunningTask) -> None:
        if rt.holds_slot:
            rt.holds_slot = False
            self._hosts[rt.host] -= 1
            if self._hosts[rt.host] <= 0:
                del self._hosts[rt.host]
            self._pump()

    async def _run(self, rt: RunningTask) -> None:
        task = rt.task
        try:
            path, digest = await self._download_phase(rt)
            await self._processing_phase(rt, path, digest)
        except asyncio.CancelledError:
            if rt.stop_reason is None:
                raise
            log.debug("task %s stopped: %s", task.task_id, rt.stop_reason.value)
        except DownloadError as error:
            await self._fail(
                task, error.error_type, error.message, status=error.status, attempt=error.attempt
            )
        except ProcessingError as error:
            await self._fail(task, error.error_type, error.message)
        except Exception as exc:
            log.exception("task %s: unexpected failure", task.task_id)
            await self._fail(
                task, ErrorType.INTERNAL_ERROR, f"internal error: {type(exc).__name__}"
            )
        finally:
            task.downloaded_bytes = rt.tracker.downloaded_bytes
            self._running.pop(task.task_id, None)
            self._release_slot(rt)
            self._pump()

    async def _download_phase(self, rt: RunningTask) -> tuple[Path, str | None]:
        task = rt.task
        downloads = self.settings.downloads_dir
        if task.filename is not None:
            final = downloads / task.filename
            part = downloads / filenames.part_name(task.filename)
            if task.state is TaskState.PROCESSING or (final.exists() and not part.exists()):
                # Crashed after the rename: the file is complete, only processing is left.
                if final.exists():
                    return final, None
        await self.transition(
            task, EventName.STARTED, TaskState.DOWNLOADING, attempts=task.attempts + 1
        )
        outcome = await self.downloader.download(task, rt)
        assert task.filename is not None
        rt.transferring = False
        if rt.tracker.total_bytes is None:
            rt.tracker.total_bytes = outcome.size
        task.total_bytes = outcome.size
        # The last progress event before completion shows 100 %.
        await rt.emit_progress(force=True)
        final = downloads / task.filename
        await asyncio.to_thread(_move_into_place, outcome.part_path, final)
        return final, outcome.sha256

    async def _processing_phase(self, rt: RunningTask, path: Path, digest: str | None) -> None:
        task = rt.task
        size = path.stat().st_size
        await self.transition(
            task,
            EventName.PROCESSING,
            TaskState.PROCESSING,
            progress=Progress(size, size),
            downloaded_bytes=size,
            total_bytes=size,
        )
        # Only now: a slot freed earlier would let the next task show `downloading` while
        # this one still does, more at once than --max-concurrent says.
        self._release_slot(rt)
        ctx = await self.pipeline.run(ProcessingContext(task, path, digest, rt))
        final_size = ctx.path.stat().st_size
        body = completed_body(ctx.path.name, final_size, ctx.duration_seconds, **ctx.extra)
        await self.transition(
            task,
            EventName.COMPLETED,
            TaskState.COMPLETED,
            body,
            progress=Progress(size, size),
            filename=ctx.path.name,
            result=body["result"],
            error=None,
        )

    async def _fail(
        self,
        task: Task,
        error_type: ErrorType,
        message: str,
        status: int | None = None,
        attempt: int | None = None,
    ) -> None:
        extra: dict[str, Any] = {"retryable": False}
        if status is not None:
            extra["status"] = status
        body = error_body(error_type, message, **extra)
        # Beside the error too, where every retried attempt's event says it.
        body["retryable"] = False
        if attempt is not None:
            body["attempt"] = attempt
        await self.transition(
            task,
            EventName.ERROR,
            TaskState.FAILED,
            body,
            error=body["error"],
            downloaded_bytes=task.downloaded_bytes,
        )

    async def transition(
        self,
        task: Task,
        name: EventName,
        state: TaskState,
        body: JSON | None = None,
        *,
        progress: Progress | None = None,
        **fields: Any,
    ) -> None:
        """Persist a task change with its event, then tell everyone; never half-done.

        Shielded: a cancel arriving mid-write must not leave the database and the
        in-memory task disagreeing about what happened.
        """
        change = TaskChange(state=state, updated_at=time.time(), **fields)

        async def persist(event: Event) -> None:
            await self.store.record_transition(event, task.task_id, change)

        async def publish() -> None:
            await self.bus.publish(
                name,
                task.task_id,
                task.owner_key_id,
                state,
                body,
                progress=progress,
                persist=persist,
            )
            # Inside the shield too: a transition that happened is applied and logged even
            # when the caller is cancelled while it is being written.
            change.apply_to(task)
            _log_transition(task.task_id, name, state, body or {})

        await asyncio.shield(publish())

    # -- background --------------------------------------------------------------------

    async def _tick_progress(self) -> None:
        # Keeps speed and ETA honest while no bytes arrive (a stall reads as slowing down,
        # not as frozen at the last speed).
        while True:
            await asyncio.sleep(self.settings.progress_interval)
            for rt in list(self._running.values()):
                if rt.transferring and rt.tracker.seconds_since_last_byte() >= 0.5:
                    if rt.tracker.due():
                        await rt.emit_progress()

    async def _flush_snapshots(self) -> None:
        while True:
            await asyncio.sleep(self.settings.snapshot_interval)
            try:
                await self._save_snapshots()
            except Exception:
                log.exception("could not save progress snapshots")

    async def _save_snapshots(self) -> None:
        rows = [
            SnapshotRow(rt.task.task_id, rt.tracker.downloaded_bytes, rt.tracker.total_bytes)
            for rt in self._running.values()
            if rt.transferring
        ]
        await self.store.save_snapshots(rows)

    def _part_path(self, task: Task) -> Path | None:
        if task.filename is None:
            return None
        return self.settings.downloads_dir / filenames.part_name(task.filename)

    @property
    def active_downloads(self) -> int:
        return sum(1 for rt in self._running.values() if rt.holds_slot)


def _unlink_all(paths: list[Path]) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _move_into_place(part: Path, final: Path) -> None:
    part.replace(final)
    fsync_dir(final.parent)


def _log_transition(task_id: str, name: EventName, state: TaskState, body: JSON) -> None:
    """The one log line of each task transition (submission logs its own, with the URL)."""
    error = body.get("error") or {}
    level = logging.INFO
    if name is EventName.ERROR and state is TaskState.DOWNLOADING:
        level = logging.WARNING
        text = (
            f"attempt {body.get('attempt')} failed ({error.get('type')}: "
            f"{str(error.get('message'))[:500]}),"
            f" retrying in {body.get('retry_in_seconds')}s"
        )
    elif name is EventName.ERROR:
        level = logging.WARNING
        text = f"failed ({error.get('type')}): {str(error.get('message'))[:500]}"
    elif name is EventName.STARTED and body.get("restarted_from_zero"):
        text = f"downloading, restarted from zero: {body.get('reason')}"
    elif name is EventName.QUEUED:
        text = "queued again after a restart" if body.get("recovered") else "queued again"
    elif name is EventName.COMPLETED:
        result = body.get("result") or {}
        text = f"completed: {result.get('filename')} ({result.get('size_mb')} MB)"
    else:
        text = state.value
    log.log(level, "task %s %s", task_id, text)


def _redacted(url: str) -> str:
    """The URL without credentials or query: operators see where, never a secret."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}"
