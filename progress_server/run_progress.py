"""RunProgress: when one run's live events go out and what they carry (`download.progress`
and a processing step's `download.processing`, neither stored one by one).

Progress events keep --progress-interval between the timestamps they carry, the final 100 %
frame included: a frame counts as sent at the very moment that becomes its timestamp
(ProgressTracker.mark_emitted), so no pause of the process can bring two closer.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from progress_server.models import JSON, EventName, Progress, TaskState

if TYPE_CHECKING:
    from progress_server.runner import TaskRun


class RunProgress:
    def __init__(self, run: TaskRun) -> None:
        self._run = run
        self.tracker = run.tracker
        # *extra* fields of the run's progress events (a media task's `fragments`).
        self.extra: JSON = {}
        self._last_progress: JSON | None = None
        # Whether the run sent a progress frame yet (the spacing is kept after one).
        self._framed = False
        self._last_processing_report = float("-inf")
        self._last_processing: JSON | None = None

    async def received(self, nbytes: int) -> None:
        """Count bytes; a progress event when one is due."""
        tracker = self.tracker
        tracker.add(nbytes)
        if tracker.until_due() > 0 or self._ending_within_interval():
            return
        await self.emit()

    def _ending_within_interval(self) -> bool:
        # The final 100 % frame keeps the interval's spacing too; a frame sent in the
        # last interval would make the end of the download wait for it.
        tracker = self.tracker
        if tracker.total_bytes is None:
            return False
        speed = tracker.speed_bps()
        remaining = tracker.total_bytes - tracker.downloaded_bytes
        return speed > 0 and remaining < speed * tracker.interval

    async def emit(self, force: bool = False) -> None:
        """A progress event now (its caller found one due), unless nothing changed; with
        `force`, the final one, which waits out the interval after an earlier frame."""
        tracker = self.tracker
        progress = tracker.snapshot()
        wire = progress.to_wire()
        if not force and wire == self._last_progress:
            return
        if force and self._framed:
            # The forced final 100 % frame keeps the --progress-interval spacing after an
            # earlier frame too: wait out the rest of it.
            while (delay := tracker.until_due()) > 0:
                await asyncio.sleep(delay)
                progress = tracker.snapshot()
                wire = progress.to_wire()
        # Counted as sent at the very moment that becomes its timestamp.
        timestamp = tracker.mark_emitted()
        self._last_progress = wire
        body: JSON = {"progress": wire, **self.extra}
        view = self._run.transfer_view()
        if "segments" in view:
            # Only a split download's events carry the *extra* figures: the guide's event
            # keeps its exact shape for every other.
            body.update(view)
        self._framed = True
        await self._publish(EventName.PROGRESS, TaskState.DOWNLOADING, body, progress, timestamp)

    async def processing(
        self, step: str, percentage: float | None, eta_seconds: int | None
    ) -> None:
        """A processing step's progress, throttled like download progress; a step's 100 %
        always gets through."""
        now = time.monotonic()
        interval = self.tracker.interval
        if now - self._last_processing_report < interval and percentage != 100.0:
            return
        report = {"step": step, "percentage": percentage, "eta_seconds": eta_seconds}
        if report == self._last_processing:
            return
        self._last_processing_report = now
        self._last_processing = report
        await self._publish(EventName.PROCESSING, TaskState.PROCESSING, {"processing": report})

    async def _publish(
        self,
        name: EventName,
        state: TaskState,
        body: JSON,
        progress: Progress | None = None,
        timestamp: float | None = None,
    ) -> None:
        run = self._run
        # Not fenced by the database (progress is not stored): a run that lost its task
        # must not tell of bytes it no longer fetches.
        run.lease.check()
        task = run.task
        await run.ctx.bus.publish(
            name,
            task.task_id,
            task.owner_key_id,
            state,
            body,
            progress=progress,
            timestamp=timestamp,
        )
