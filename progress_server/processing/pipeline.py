"""The ordered steps a downloaded file goes through, each a small class with one job."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from progress_server.models import ErrorType, Task


class ProcessingError(Exception):
    def __init__(self, error_type: ErrorType, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message


class ProgressReporter(Protocol):
    async def processing_progress(
        self, step: str, percentage: float | None, eta_seconds: int | None
    ) -> None: ...


@dataclass
class ProcessingContext:
    """What the steps share: the file as it is now, and what has been learned about it."""

    task: Task
    path: Path
    sha256: str | None
    reporter: ProgressReporter
    duration_seconds: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Step(Protocol):
    name: str

    async def run(self, ctx: ProcessingContext) -> None: ...


class Pipeline:
    def __init__(self, steps: list[Step], max_concurrent: int = 1) -> None:
        self.steps = steps
        # Processing has its own limit so a long transcode never takes a download slot.
        self._slots = asyncio.Semaphore(max_concurrent)

    async def run(self, ctx: ProcessingContext) -> ProcessingContext:
        async with self._slots:
            for step in self.steps:
                await step.run(ctx)
        return ctx
