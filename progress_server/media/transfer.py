"""MediaTransfer: runs media workers for one task and drives its observer from their lines.

It plays the part the Downloader plays for plain files: an observer with the same method
names (response_started, received, attempt_failed) sees one transfer with one byte count,
whatever formats and fragments carry it, plus what only media has (the extracted title and
duration, fragments, ffmpeg's processing). Failed runs that may succeed again are retried
with backoff; each new run resumes from yt-dlp's partial files in the job's folder.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from typing import Any, Protocol

from progress_server.media.errors import INTERNAL_ERROR, TIMEOUT, MediaError
from progress_server.media.job import MediaJob
from progress_server.media.process import WorkerProcess
from progress_server.media.progress import CombinedProgress
from progress_server.media.results import ExtractedMedia, MediaFile, MediaPlaylist
from progress_server.settings import Settings

# yt-dlp's bookkeeping steps, not work a user waits for.
_QUIET_POSTPROCESSORS = frozenset({"MoveFiles"})


class MediaObserver(Protocol):
    """What a media transfer tells the task running it."""

    async def media_extracted(self, media: ExtractedMedia) -> None: ...

    async def response_started(
        self, offset: int, total: int | None, etag: str | None, last_modified: str | None
    ) -> None: ...

    async def total_changed(self, total: int | None) -> None:
        """A new total (estimates firm up as fragments arrive). It must not emit progress
        by itself: when it grows, the received() that follows at once carries it, so the
        percentage a client sees never goes down."""
        ...

    async def received(self, nbytes: int) -> None: ...

    async def fragments(self, index: int, count: int | None) -> None: ...

    async def processing(self, step: str, percentage: float | None) -> None: ...

    async def attempt_failed(self, error: MediaError, attempt: int, delay: float) -> None: ...


@dataclass(frozen=True)
class MediaTransfer:
    max_retries: int = 5
    retry_base_delay: float = 1.0
    retry_max_delay: float = 60.0
    # From the worker's start to its `extracted` (or `playlist`) line.
    extract_timeout: float = 120.0
    # Between SIGTERM and SIGKILL of the worker's process group on cancel, pause or failure.
    stop_grace: float = 1.0
    python: str | None = None

    @classmethod
    def for_settings(cls, settings: Settings) -> MediaTransfer:
        return cls(
            max_retries=settings.max_retries,
            retry_base_delay=settings.retry_base_delay,
            retry_max_delay=settings.retry_max_delay,
        )

    async def download(self, job: MediaJob, observer: MediaObserver) -> MediaFile | MediaPlaylist:
        """Run the job until it succeeds or its retries are spent; raises MediaError.

        Cancelling the awaiting task stops the worker and everything it started.
        """
        attempt = 0
        shown = 0.0
        while True:
            attempt += 1
            run = _Run(observer, floor=shown)
            try:
                return await self.run_once(job, observer, run)
            except MediaError as error:
                shown = run.fraction
                if not (error.retryable and attempt <= self.max_retries):
                    error.retryable = False
                    raise
                delay = self.backoff(attempt)
                await observer.attempt_failed(error, attempt, delay)
                await asyncio.sleep(delay)

    def backoff(self, attempt: int) -> float:
        ceiling = float(min(self.retry_max_delay, self.retry_base_delay * 2 ** (attempt - 1)))
        # "Equal jitter", as the downloader's: never less than half the step.
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    async def run_once(
        self, job: MediaJob, observer: MediaObserver, run: _Run | None = None
    ) -> MediaFile | MediaPlaylist:
        """One worker run: extract, then download (resuming what is on disk) or list."""
        run = run or _Run(observer)
        worker = await WorkerProcess.start(job.to_json(), self.python)
        try:
            return await self._follow(worker, run)
        finally:
            await worker.stop(self.stop_grace)

    async def _follow(self, worker: WorkerProcess, run: _Run) -> MediaFile | MediaPlaylist:
        events = aiter(worker.events())
        try:
            async with asyncio.timeout(self.extract_timeout):
                while not run.extracted:
                    event = await anext(events, None)
                    if event is None:
                        break
                    await run.handle(event)
        except TimeoutError:
            raise MediaError(
                TIMEOUT, f"extraction took longer than {self.extract_timeout:g} s", retryable=True
            ) from None
        async for event in events:
            await run.handle(event)
        code = await worker.wait()
        if run.error is not None:
            raise run.error
        if run.outcome is not None:
            return run.outcome
        if code < 0:
            # Killed from outside (the OOM killer, an operator): another run may well work.
            raise MediaError(
                INTERNAL_ERROR, f"the media worker was killed by signal {-code}", retryable=True
            )
        detail = worker.last_stderr_line or f"exit status {code}"
        raise MediaError(INTERNAL_ERROR, f"the media worker stopped without a result: {detail}")


class _Run:
    """One worker run's lines turned into observer calls and an outcome."""

    def __init__(self, observer: MediaObserver, floor: float = 0.0) -> None:
        self.observer = observer
        self.floor = floor
        self.extracted = False
        self.progress: CombinedProgress | None = None
        self.started = False
        self.reported = 0
        self.reported_total: int | None = None
        self.fragment: tuple[int, int | None] | None = None
        self.outcome: MediaFile | MediaPlaylist | None = None
        self.error: MediaError | None = None

    @property
    def fraction(self) -> float:
        return self.progress.fraction if self.progress is not None else self.floor

    async def handle(self, event: dict[str, Any]) -> None:
        kind = event["event"]
        if kind == "extracted":
            self.extracted = True
            media = ExtractedMedia.from_event(event)
            self.progress = CombinedProgress([p.expected for p in media.parts], self.floor)
            await self.observer.media_extracted(media)
        elif kind == "playlist":
            self.extracted = True
            self.outcome = MediaPlaylist.from_event(event)
        elif kind == "progress":
            await self._progress(event)
        elif kind == "postprocess":
            await self._postprocess(event)
        elif kind == "finished":
            self.outcome = MediaFile.from_event(event)
        elif kind == "error":
            self.extracted = True
            self.error = MediaError.from_event(event)

    async def _progress(self, event: dict[str, Any]) -> None:
        if self.progress is None:
            self.progress = CombinedProgress([], self.floor)
        part, downloaded = event.get("part"), event.get("downloaded")
        total = event.get("total") or event.get("estimate")
        self.progress.update(
            part if isinstance(part, int) else 0,
            downloaded if isinstance(downloaded, int) else 0,
            total if isinstance(total, int) else None,
            finished=event.get("status") == "finished",
        )
        now, total_now = self.progress.downloaded, self.progress.total
        if not self.started:
            # What a resumed run found on disk counts as its offset, as a Range resume's.
            self.started = True
            self.reported, self.reported_total = now, total_now
            await self.observer.response_started(now, total_now, None, None)
        else:
            delta = now - self.reported
            grows = (
                self.reported_total is not None
                and total_now is not None
                and total_now > self.reported_total
            )
            # A larger total alone would lower the shown percentage; it waits for bytes.
            if total_now != self.reported_total and (delta > 0 or not grows):
                self.reported_total = total_now
                await self.observer.total_changed(total_now)
            if delta > 0:
                self.reported = now
                await self.observer.received(delta)
        index, count = event.get("fragment_index"), event.get("fragment_count")
        if isinstance(index, int) and (index, count) != self.fragment:
            self.fragment = (index, count if isinstance(count, int) else None)
            await self.observer.fragments(*self.fragment)

    async def _postprocess(self, event: dict[str, Any]) -> None:
        step = str(event.get("postprocessor") or "")
        if step in _QUIET_POSTPROCESSORS:
            return
        status = event.get("status")
        percentage = event.get("percentage")
        if status == "finished":
            percentage = 100.0
        elif not isinstance(percentage, int | float):
            percentage = None
        await self.observer.processing(step, percentage)
