"""The ordered steps a downloaded file goes through, each a small class with one job.

Every task runs the same steps; a step whose work the task did not ask for (a transcode)
returns at once, so the per-task configuration is the task's `post_process` options.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from progress_server.models import ErrorType, Task
from progress_server.processing.media import MediaInfo
from progress_server.processing.options import InvalidPostProcess, PostProcess, parse_post_process


class ProcessingError(Exception):
    def __init__(self, error_type: ErrorType, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message


class TaskHost(Protocol):
    """What the steps need from the scheduler running their task."""

    async def processing_progress(
        self, step: str, percentage: float | None, eta_seconds: int | None
    ) -> None:
        """Report a step's progress; the host throttles and never stores every tick."""

    async def place_output(self, scratch: Path, wanted: str) -> Path:
        """Move a finished output into the downloads folder under a name no task uses."""


@dataclass
class ProcessingContext:
    """What the steps share: the file as it is now, and what has been learned about it."""

    task: Task
    path: Path
    sha256: str | None
    reporter: TaskHost
    duration_seconds: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    media: MediaInfo | None = None

    @property
    def options(self) -> PostProcess:
        try:
            return parse_post_process(self.task.options.get("post_process"))
        except InvalidPostProcess as exc:
            # Checked at submission, so only a preset removed since then gets here.
            raise ProcessingError(ErrorType.PROCESSING_ERROR, str(exc)) from exc

    def describe(self, media: MediaInfo | None) -> None:
        """Record what the current file is; the completion result reports it."""
        self.media = media
        self.duration_seconds = media.duration_seconds if media else None
        # Only media gets a `media` entry: a plain file's result stays the guide's three fields.
        if media is None:
            self.extra.pop("media", None)
        else:
            self.extra["media"] = media.to_wire()


class Step(Protocol):
    name: str

    async def run(self, ctx: ProcessingContext) -> None: ...


class Pipeline:
    """Runs the steps in order. Heavy steps (a transcode) limit themselves with their own
    `--max-processing` slots, so quick ones (verify, probe) never queue behind them."""

    def __init__(self, steps: list[Step]) -> None:
        self.steps = steps

    async def run(self, ctx: ProcessingContext) -> ProcessingContext:
        for step in self.steps:
            await step.run(ctx)
        return ctx
