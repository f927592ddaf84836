"""MediaDownloadPhase: a media task's download, a yt-dlp worker reporting to the task's run;
its file moved into the downloads folder, or a playlist's entries created.

It plays the part the Downloader plays for a plain file, and reports through the same
TaskRun (the same tracker, throttling, events and transition table): the worker's merge
is the task's `processing`, its retries the task's failed attempts. The worker downloads
into the task's own work folder (DownloadsDir.media_work_dir), where a later run, after a
pause or a crash, finds yt-dlp's partial files and continues from them.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

from progress_server.engine import DownloadError
from progress_server.engine.throttle import mbps_to_bps
from progress_server.media.errors import MediaError
from progress_server.media.job import DEFAULT_FORMAT, MediaJob
from progress_server.media.results import ExtractedMedia, MediaFile, MediaPlaylist
from progress_server.media.transfer import MediaTransfer
from progress_server.models import ErrorType

if TYPE_CHECKING:
    from progress_server.runner import TaskRun

# yt-dlp's postprocessors under the names a processing event gives its steps.
_STEP_NAMES = {"Merger": "merge", "FixupM3u8": "fixup", "FixupDuplicateMoov": "fixup"}


def download_error(error: MediaError, attempt: int | None = None) -> DownloadError:
    """A media failure as the runner handles every transfer's failures."""
    try:
        error_type = ErrorType(error.error_type)
    except ValueError:
        error_type = ErrorType.INTERNAL_ERROR
    failure = DownloadError(
        error_type, error.message, retryable=error.retryable, status=error.status
    )
    failure.attempt = attempt
    return failure


class MediaDownloadPhase:
    """The download part of one run of a media task; also the worker's MediaObserver."""

    def __init__(self, run: TaskRun) -> None:
        self._run = run
        self.task = run.task
        self.ctx = run.ctx
        self.media: ExtractedMedia | None = None
        self._attempt = 1

    def job(self) -> MediaJob:
        task, settings = self.task, self.ctx.settings
        options = task.options
        limits = [v for v in (options.get("max_speed_mbps"), settings.speed_limit_mbps) if v]
        playlist = options.get("playlist", True) is not False
        # An entry without a page of its own is item `playlist_index` of its list's URL.
        item = task.playlist_index if task.parent_id is not None and playlist else None
        return MediaJob.for_settings(
            settings,
            task.url,
            self.ctx.downloads.media_work_dir(task.task_id),
            format=options.get("format") or DEFAULT_FORMAT,
            ratelimit=int(mbps_to_bps(min(limits))) if limits else None,
            playlist=(playlist and task.parent_id is None) or item is not None,
            playlist_index=item,
        )

    async def run(self) -> tuple[Path, str | None] | None:
        """The placed file (and no digest: the pipeline hashes it if asked), or None when
        the URL was a playlist whose entries now run as tasks of their own."""
        task, downloads = self.task, self.ctx.downloads
        placed = downloads.finished_file(task)
        if placed is not None:
            # Crashed after the file was placed: only processing is left.
            await downloads.remove_media_work(task.task_id)
            return placed, None
        await self._run.begin_attempt()
        try:
            outcome = await MediaTransfer.for_settings(self.ctx.settings).download(self.job(), self)
        except MediaError as error:
            raise download_error(error, self._attempt) from error
        self._run.transferring = False
        if isinstance(outcome, MediaPlaylist):
            await self._expand(outcome)
            return None
        return await self._place(outcome), None

    async def _expand(self, playlist: MediaPlaylist) -> None:
        expansion = asyncio.ensure_future(self.ctx.playlists.expand(self.task, playlist))
        try:
            await asyncio.shield(expansion)
        except asyncio.CancelledError:
            # Finished even when the run is stopped: entries stored without their parent's
            # list would run as orphans; with it, a cancel of the parent reaches them.
            await expansion
            raise
        await self.ctx.downloads.remove_media_work(self.task.task_id)

    async def _place(self, media: MediaFile) -> Path:
        task, downloads = self.task, self.ctx.downloads
        if not self._run.processing_started:
            await self._show_complete(media.size)
        name = task.filename or media.path.name
        if task.requested_filename is None and Path(name).suffix != media.path.suffix:
            # yt-dlp merged into another container than extraction named (.mkv, .webm).
            name = await downloads.claim(task.task_id, Path(name).stem + media.path.suffix)
        elif task.filename is None:
            name = await downloads.claim(task.task_id, name)
        task.filename = name
        placed = await downloads.place_download(media.path, name)
        await downloads.remove_media_work(task.task_id)
        return placed

    async def _show_complete(self, size: int) -> None:
        """The download is whole: the last progress event shows 100 %."""
        tracker = self._run.tracker
        if tracker.downloaded_bytes <= 0:
            tracker.downloaded_bytes = size
        tracker.total_bytes = tracker.downloaded_bytes
        await self._run.progress.emit(force=True)

    # -- MediaObserver -------------------------------------------------------------------

    async def media_extracted(self, media: ExtractedMedia) -> None:
        self.media = media
        if self.task.filename is None:
            # Named once, after the title; a resumed run keeps the name it had.
            self.task.filename = await self.ctx.downloads.claim(self.task.task_id, media.filename)

    async def response_started(
        self, offset: int, total: int | None, etag: str | None, last_modified: str | None
    ) -> None:
        await self._run.response_started(offset, total, None, None)

    async def total_changed(self, total: int | None) -> None:
        self._run.tracker.total_bytes = total

    async def received(self, nbytes: int) -> None:
        await self._run.received(nbytes)

    async def fragments(self, index: int, count: int | None) -> None:
        self._run.progress.extra = {"fragments": {"index": index, "count": count}}

    async def processing(self, step: str, percentage: float | None) -> None:
        run = self._run
        if not run.processing_started:
            # ffmpeg merging the parts: the task is processing from here on.
            run.transferring = False
            await self._show_complete(run.tracker.downloaded_bytes)
            await run.begin_processing(run.tracker.downloaded_bytes)
        await run.processing_progress(_STEP_NAMES.get(step, step.lower()), percentage, None)

    async def attempt_failed(self, error: MediaError, attempt: int, delay: float) -> None:
        self._attempt = attempt + 1
        self._run.processing_started = False
        self._run.progress.extra = {}
        await self._run.attempt_failed(download_error(error), attempt, delay)
