"""Which media tools this server has: ffmpeg and ffprobe are optional, found once at start-up."""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MediaTools:
    ffmpeg: str | None = None
    ffprobe: str | None = None
    # `setpriv --pdeathsig KILL`: the kernel kills a tool the moment this server dies, so a
    # crash never leaves an orphaned ffmpeg writing into the downloads folder.
    guard: tuple[str, ...] = ()

    @classmethod
    def find(cls, path: str | None = None) -> MediaTools:
        """Look the tools up on PATH (or the given search path)."""
        setpriv = shutil.which("setpriv", path=path)
        return cls(
            ffmpeg=shutil.which("ffmpeg", path=path),
            ffprobe=shutil.which("ffprobe", path=path),
            guard=(setpriv, "--pdeathsig", "KILL", "--") if setpriv else (),
        )

    @property
    def can_probe(self) -> bool:
        return self.ffprobe is not None

    @property
    def can_transcode(self) -> bool:
        # A transcode's progress and its result are measured with ffprobe, so it needs both.
        return self.ffmpeg is not None and self.ffprobe is not None


def detect_media_tools() -> MediaTools:
    """Find the tools and say once, at start-up, what is missing and what that costs."""
    tools = MediaTools.find()
    missing = [
        name for name, where in (("ffmpeg", tools.ffmpeg), ("ffprobe", tools.ffprobe)) if not where
    ]
    if missing:
        costs = [] if tools.can_probe else ["media is not probed (duration_seconds is null)"]
        costs.append("tasks asking for a transcode are refused with 422")
        log.warning(
            "%s not found on PATH: %s; install ffmpeg to enable them",
            " and ".join(missing),
            ", and ".join(costs),
        )
    return tools
