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
    # Put before every tool's argv. `setpriv --pdeathsig KILL`: the kernel kills the tool the
    # moment this server dies, so a crash never leaves an orphaned ffmpeg writing into the
    # downloads folder. `nice`: a transcode gets the CPU only when the server does not need
    # it, so on a small machine it slows down rather than the downloads and sockets.
    guard: tuple[str, ...] = ()

    @classmethod
    def find(cls, path: str | None = None) -> MediaTools:
        """Look the tools up on PATH (or the given search path)."""
        setpriv = shutil.which("setpriv", path=path)
        nice = shutil.which("nice", path=path)
        guard: tuple[str, ...] = (setpriv, "--pdeathsig", "KILL", "--") if setpriv else ()
        guard += (nice, "-n", "10") if nice else ()
        return cls(
            ffmpeg=shutil.which("ffmpeg", path=path),
            ffprobe=shutil.which("ffprobe", path=path),
            guard=guard,
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
