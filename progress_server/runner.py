"""TaskRun: one run of one task, download then processing, and the observer its transfer and
its processing steps report to.

The scheduler decides when a run starts and stops; the run decides nothing about other tasks.
Every state change it makes goes through TaskLifecycle, so the transition table sees it, and
carries the run's lease: in a cluster a run whose task was taken over (LeaseLost) stops at
once, writing nothing more, not even bytes to the `.part` file.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from progress_server import filenames
from progress_server.coordination import NO_LEASE, LeaseLost, RunLease
from progress_server.downloads_dir import DownloadsDir
from progress_server.engine import Downloader, DownloadError
from progress_server.events import EventBus
from progress_server.lifecycle import TaskLifecycle
from progress_server.media.download_phase import MediaDownloadPhase
from progress_server.models import (
    JSON,
    ErrorType,
    EventName,
    Progress,
    Task,
    TaskState,
    completed_body,
    error_body,
)
from progress_server.playlists import Playlists
from progress_server.processing import Pipeline, ProcessingContext, ProcessingError
from progress_server.run_progress import RunProgress
from progress_server.settings import Settings
from progress_server.store import SnapshotRow, TaskChange
from progress_server.tracker import ProgressTracker

log = logging.getLogger("progress_server.tasks")


class StopReason(enum.Enum):
    CANCEL = "cancel"
    PAUSE = "pause"
    DELETE = "delete"
    SHUTDOWN = "shutdown"
    # The task is no longer this node's (cluster mode): stop without writing anything.
    LEASE_LOST = "lease lost"


@dataclass(frozen=True)
class RunContext:
    """What every run uses, shared by all of them."""

    settings: Settings
    lifecycle: TaskLifecycle
    bus: EventBus
    downloader: Downloader
    pipeline: Pipeline
    downloads: DownloadsDir
    playlists: Playlists


class TaskRun:
    def __init__(
        self,
        task: Task,
        ctx: RunContext,
        free_slot: Callable[[TaskRun], None],
        lease: RunLease = NO_LEASE,
    ) -> None:
        self.task = task
        self.ctx = ctx
        self.lease = lease
        # Called once the download part is over, so the next task may start downloading.
        self._free_slot = free_slot
        self.tracker = ProgressTracker(
            task.total_bytes, task.downloaded_bytes, ctx.settings.progress_interval
        )
        self.progress = RunProgress(self)
        self.stop_reason: StopReason | None = None
        self.job: asyncio.Task[None] | None = None
        self.holds_slot = False
        self.host = urlsplit(task.url).hostname or ""
        self.transferring = False
        # Connections the transfer has open now (a split download uses several).
        self.connections = 0
        # The write of the last response's facts (validators, size), while it is pending.
        self._facts: asyncio.Future[None] | None = None
        # A media worker's merge took the task to processing before its file was placed.
        self.processing_started = False

    def start(self, finished: Callable[[TaskRun], None]) -> None:
        """Run in the background; `finished` is told when the run is over, however it ended
        (a done callback, so even a run cancelled before its first step reports)."""

        def report(_: asyncio.Task[None]) -> None:
            self.task.downloaded_bytes = self.tracker.downloaded_bytes
            finished(self)

        self.job = asyncio.create_task(self.run(), name=f"task-{self.task.task_id}")
        self.job.add_done_callback(report)

    async def stop(self, reason: StopReason) -> None:
        self.stop_reason = reason
        if self.job is not None and not self.job.done():
            self.job.cancel()
            await asyncio.wait([self.job])
        self.task.downloaded_bytes = self.tracker.downloaded_bytes

    def snapshot_row(self) -> SnapshotRow:
        return SnapshotRow(
            self.task.task_id, self.tracker.downloaded_bytes, self.tracker.total_bytes
        )

    # -- the run -----------------------------------------------------------------------

    async def run(self) -> None:
        try:
            await self._run()
        except LeaseLost:
            # However the node learned it (a fenced write, the heartbeat, another node's
            # action stopping the run from outside), one line says so; nothing more is written.
            log.info("task %s: stopped, this node no longer holds it", self.task.task_id)

    async def _run(self) -> None:
        task = self.task
        try:
            if task.is_media:
                downloaded = await MediaDownloadPhase(self).run()
                if downloaded is None:
                    return  # a playlist: its entries run as tasks of their own
            else:
                downloaded = await self._download_phase()
            await self._processing_phase(*downloaded)
        except asyncio.CancelledError:
            if self.stop_reason is None:
                raise
            if self.stop_reason is StopReason.LEASE_LOST:
                raise LeaseLost(task.task_id) from None
            log.debug("task %s stopped: %s", task.task_id, self.stop_reason.value)
        except LeaseLost:
            raise
        except DownloadError as error:
            await self._fail(error.error_type, error.message, error.status, error.attempt)
        except ProcessingError as error:
            await self._fail(error.error_type, error.message)
        except Exception as exc:
            log.exception("task %s: unexpected failure", task.task_id)
            await self._fail(ErrorType.INTERNAL_ERROR, f"internal error: {type(exc).__name__}")

    async def _download_phase(self) -> tuple[Path, str | None]:
        task = self.task
        downloads = self.ctx.downloads
        finished = downloads.finished_file(task)
        if finished is not None and (
            task.state is TaskState.PROCESSING or not downloads.has_part(task)
        ):
            # Crashed after the rename: the file is complete, only processing is left.
            return finished, None
        await self.begin_attempt()
        try:
            outcome = await self.ctx.downloader.download(task, self)
        finally:
            await self._stored_facts()
        assert task.filename is not None
        self.transferring = False
        if self.tracker.total_bytes is None:
            self.tracker.total_bytes = outcome.size
        task.total_bytes = outcome.size
        # The last progress event before completion shows 100 %.
        await self.progress.emit(force=True)
        # Only a run that provably still holds the task may give its file the final name.
        await self.lease.confirm()
        final = await downloads.place_download(outcome.part_path, task.filename)
        return final, outcome.sha256

    async def begin_attempt(self) -> None:
        """The task is downloading, one attempt more than before (`download.started`)."""
        await self.ctx.lifecycle.transition(
            self.task,
            EventName.STARTED,
            TaskState.DOWNLOADING,
            change=TaskChange(attempts=self.task.attempts + 1),
            lease=self.lease,
        )

    async def _processing_phase(self, path: Path, digest: str | None) -> None:
        task = self.task
        size = path.stat().st_size
        if not self.processing_started:
            await self.begin_processing(size)
        # Only now: a slot freed earlier would let the next task show `downloading` while
        # this one still does, more at once than --max-concurrent says.
        self._free_slot(self)
        done = await self.ctx.pipeline.run(ProcessingContext(task, path, digest, self))
        final_size = done.path.stat().st_size
        body = completed_body(done.path.name, final_size, done.duration_seconds, **done.extra)
        await self.ctx.lifecycle.transition(
            task,
            EventName.COMPLETED,
            TaskState.COMPLETED,
            body,
            progress=Progress(size, size),
            change=TaskChange(filename=done.path.name, result=body["result"], error=None),
            lease=self.lease,
        )

    async def begin_processing(self, size: int) -> None:
        """The download is whole, `size` bytes: the task is processing from here on."""
        await self.ctx.lifecycle.transition(
            self.task,
            EventName.PROCESSING,
            TaskState.PROCESSING,
            progress=Progress(size, size),
            change=TaskChange(downloaded_bytes=size, total_bytes=size),
            lease=self.lease,
        )
        self.processing_started = True

    async def _fail(
        self,
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
        await self.ctx.lifecycle.transition(
            self.task,
            EventName.ERROR,
            TaskState.FAILED,
            body,
            change=TaskChange(error=body["error"], downloaded_bytes=self.task.downloaded_bytes),
            lease=self.lease,
        )

    # -- TransferObserver --------------------------------------------------------------

    async def choose_filename(self, content_disposition: str | None) -> str:
        task = self.task
        wanted = filenames.choose(
            task.requested_filename, content_disposition, task.url, task.task_id
        )
        return await self.ctx.downloads.claim(task.task_id, wanted)

    async def response_started(
        self, offset: int, total: int | None, etag: str | None, last_modified: str | None
    ) -> None:
        self.tracker.restart(offset, total)
        self.transferring = True
        change = TaskChange(
            etag=etag, last_modified=last_modified, total_bytes=total, downloaded_bytes=offset
        )
        # Stored while the bytes flow (no one waits for it: a crash before it lands only
        # costs a resume its validator, so the download starts over); waited for before
        # the task's next transition, which it thus always precedes.
        await self._stored_facts()
        self._facts = asyncio.ensure_future(
            self.ctx.lifecycle.update(self.task, change, self.lease)
        )
        # The first frame comes one interval from now, like every other, or as the final
        # 100 % frame if the file is done before: a file fetched in a blink then has one
        # progress frame and does not wait out an interval after a 0 % one.
        self.tracker.mark_emitted()
        self.ctx.bus.show_progress(self.task.task_id, self.tracker.snapshot())

    async def _stored_facts(self) -> None:
        """Wait for the facts of the last response to be stored (see response_started)."""
        facts, self._facts = self._facts, None
        if facts is not None:
            await asyncio.shield(facts)

    async def restarted_from_zero(self, reason: str) -> None:
        # Said in the history as an *extra* started event, so a reader sees why bytes fell.
        await self.ctx.lifecycle.transition(
            self.task,
            EventName.STARTED,
            TaskState.DOWNLOADING,
            {"restarted_from_zero": True, "reason": reason},
            lease=self.lease,
        )

    def check_may_write(self) -> None:
        self.lease.check()

    async def received(self, nbytes: int) -> None:
        await self.progress.received(nbytes)

    async def connections_changed(self, open_now: int) -> None:
        self.connections = open_now

    async def attempt_failed(self, error: DownloadError, attempt: int, delay: float) -> None:
        self.transferring = False
        extra = {} if error.status is None else {"status": error.status}
        body = error_body(error.error_type, error.message, **extra)
        body["retryable"] = True
        body["attempt"] = attempt
        body["retry_in_seconds"] = round(delay, 2)
        await self.ctx.lifecycle.transition(
            self.task,
            EventName.RETRYING,
            TaskState.DOWNLOADING,
            body,
            change=TaskChange(attempts=self.task.attempts + 1),
            lease=self.lease,
        )

    # -- TaskHost (processing steps) ---------------------------------------------------

    async def processing_progress(
        self, step: str, percentage: float | None, eta_seconds: int | None
    ) -> None:
        await self.progress.processing(step, percentage, eta_seconds)

    async def place_output(self, scratch: Path, wanted: str) -> Path:
        await self.lease.confirm()
        return await self.ctx.downloads.place_output(scratch, wanted)

    # -- what a record shows of the transfer -------------------------------------------

    def transfer_view(self) -> JSON:
        """*extra* figures of a transfer under way: its connections open now and, when it
        is split, its segments (`[start, end, done]`) for a multi-part bar."""
        if not self.transferring:
            return {}
        # The first response is open before its connection is counted.
        view: JSON = {"connections": max(self.connections, 1)}
        segments = self.ctx.downloader.segments_of(self.task.task_id)
        if segments is not None:
            view["segments"] = segments
        return view
