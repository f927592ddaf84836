"""A task's `post_process` options: checked at submission, read again when processing runs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from progress_server.models import JSON
from progress_server.processing.presets import PRESETS, Preset
from progress_server.processing.tools import MediaTools


class InvalidPostProcess(ValueError):
    """The request's `post_process` cannot be honoured; the message says why (HTTP 422)."""


@dataclass(frozen=True)
class PostProcess:
    transcode: Preset | None = None

    def to_wire(self) -> JSON:
        return {"transcode": self.transcode.name if self.transcode else None}


def parse_post_process(raw: Any) -> PostProcess:
    if raw is None:
        return PostProcess()
    if not isinstance(raw, dict):
        raise InvalidPostProcess("'post_process' must be an object")
    unknown = sorted(set(raw) - {"transcode"})
    if unknown:
        raise InvalidPostProcess(
            f"unknown post_process option(s): {', '.join(unknown)}; known: transcode"
        )
    name = raw.get("transcode")
    if name is None:
        return PostProcess()
    if not isinstance(name, str):
        raise InvalidPostProcess("'post_process.transcode' must be a preset name")
    preset = PRESETS.get(name)
    if preset is None:
        raise InvalidPostProcess(
            f"unknown transcode preset {name!r}; one of {', '.join(sorted(PRESETS))}"
        )
    return PostProcess(transcode=preset)


def accept_post_process(raw: Any, tools: MediaTools | None) -> JSON:
    """The options to store with a new task, or InvalidPostProcess if this server cannot
    honour them: an unknown preset, or a transcode without ffmpeg installed (checked when
    the caller knows the server's `tools`)."""
    options = parse_post_process(raw)
    if options.transcode is not None and tools is not None and not tools.can_transcode:
        raise InvalidPostProcess(
            "transcoding needs ffmpeg and ffprobe, which are not installed on this server; "
            "submit the task without 'post_process.transcode'"
        )
    return options.to_wire()
