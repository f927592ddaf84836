"""transcode: turn the download into another format with ffmpeg, reporting its progress.

ffmpeg writes to a hidden scratch file named after the task, so a cancel, a failure or a
crash never leaves a half-written file under a real name; the finished output is moved into
place under a name no other task uses. The original download is kept: it cost a transfer to
get, a transcode loses quality, and the user may want both; `DELETE ?delete_file=true`
removes both.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from pathlib import Path

from progress_server.downloads_dir import scratch_path
from progress_server.models import ErrorType
from progress_server.processing.pipeline import ProcessingContext, ProcessingError
from progress_server.processing.presets import Preset
from progress_server.processing.probe import Prober
from progress_server.processing.processes import as_file_url, run_tool
from progress_server.processing.tools import MediaTools

log = logging.getLogger(__name__)

STEP = "transcode"


class ProgressReader:
    """Reads `ffmpeg -progress` output: blocks of key=value lines, each ending `progress=`."""

    def __init__(self, duration: float | None, started: float) -> None:
        self.duration_us = duration * 1_000_000 if duration else None
        self.started = started
        self.out_time_us = 0

    def feed(self, line: str, now: float) -> tuple[float | None, int | None] | None:
        """A (percentage, eta_seconds) report at the end of each block, else None."""
        key, _, value = line.partition("=")
        if key == "out_time_us":
            with contextlib.suppress(ValueError):
                self.out_time_us = max(self.out_time_us, int(value))
            return None
        if key != "progress" or value == "end":
            return None
        if not self.duration_us:
            return None, None
        fraction = min(self.out_time_us / self.duration_us, 1.0)
        # Floored and held below 100 until ffmpeg has finished, like download progress.
        percentage = min(math.floor(fraction * 1000) / 10, 99.9)
        eta = None
        if fraction > 0:
            elapsed = now - self.started
            eta = math.ceil(elapsed * (1 - fraction) / fraction)
        return percentage, eta


class Transcode:
    name = STEP

    def __init__(
        self,
        tools: MediaTools,
        prober: Prober,
        downloads_dir: Path,
        slots: asyncio.Semaphore,
        report_every: float = 0.5,
    ) -> None:
        self.tools = tools
        self.prober = prober
        self.downloads_dir = downloads_dir
        self.slots = slots
        # ffmpeg's own reporting period; by default it reports every half second, twice
        # as slow as the default --progress-interval.
        self.report_every = max(report_every, 0.1)

    async def run(self, ctx: ProcessingContext) -> None:
        preset = ctx.options.transcode
        if preset is None:
            return
        if self.tools.ffmpeg is None or not self.tools.can_transcode:
            raise ProcessingError(
                ErrorType.PROCESSING_ERROR, "transcoding needs ffmpeg, which is not installed"
            )
        media = ctx.media
        if media is None:
            raise ProcessingError(
                ErrorType.PROCESSING_ERROR, f"{ctx.path.name} is not a media file ffmpeg can read"
            )
        problem = preset.problem_with(media)
        if problem:
            raise ProcessingError(ErrorType.PROCESSING_ERROR, problem)
        scratch = scratch_path(self.downloads_dir, ctx.task.task_id, preset.extension)
        try:
            async with self.slots:
                log.info("task %s transcoding with preset %s", ctx.task.task_id, preset.name)
                await self._ffmpeg(ctx, preset, scratch, media.duration)
            # Probed before it is moved into place: once it has its real name, completion
            # follows at once, which keeps a crash from finding an output not yet recorded.
            produced = await self.prober.probe(scratch)
            output = await ctx.reporter.place_output(scratch, f"{ctx.path.stem}.{preset.extension}")
        finally:
            with contextlib.suppress(FileNotFoundError):
                scratch.unlink()
        ctx.extra["transcode"] = {"preset": preset.name, "source_filename": ctx.path.name}
        ctx.path = output
        ctx.describe(produced)

    async def _ffmpeg(
        self, ctx: ProcessingContext, preset: Preset, scratch: Path, duration: float | None
    ) -> None:
        assert self.tools.ffmpeg is not None
        argv = [
            *self.tools.guard,
            self.tools.ffmpeg,
            *("-hide_banner", "-nostdin", "-nostats", "-loglevel", "error"),
            *("-progress", "pipe:1", "-stats_period", f"{self.report_every:g}"),
            *("-y", "-i", as_file_url(ctx.path)),
            *preset.args,
            as_file_url(scratch),
        ]
        reader = ProgressReader(duration, time.monotonic())

        async def on_line(line: str) -> None:
            report = reader.feed(line, time.monotonic())
            if report is not None:
                await ctx.reporter.processing_progress(STEP, *report)

        await ctx.reporter.processing_progress(STEP, 0.0, None)
        try:
            done = await run_tool(argv, on_line=on_line)
        except OSError as exc:
            raise ProcessingError(ErrorType.PROCESSING_ERROR, f"cannot run ffmpeg: {exc}") from exc
        if done.returncode != 0:
            raise ProcessingError(
                ErrorType.PROCESSING_ERROR,
                f"ffmpeg could not transcode with preset '{preset.name}': {done.last_error_line}",
            )
        await ctx.reporter.processing_progress(STEP, 100.0, 0)
