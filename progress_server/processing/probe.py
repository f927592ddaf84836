"""probe: what a media file is (duration, container, codecs, size), read with ffprobe."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

from progress_server.processing.media import MediaInfo, media_info
from progress_server.processing.pipeline import ProcessingContext
from progress_server.processing.processes import as_file_url, run_tool
from progress_server.processing.tools import MediaTools

log = logging.getLogger(__name__)

PROBE_TIMEOUT = 120.0


class Prober:
    def __init__(self, tools: MediaTools) -> None:
        self.tools = tools

    async def probe(self, path: Path) -> MediaInfo | None:
        """What `path` is, or None when it is not media ffprobe can read."""
        if self.tools.ffprobe is None:
            return None
        argv = [
            *self.tools.guard,
            self.tools.ffprobe,
            "-v",
            "error",
            "-print_format",
            "json",
            "-show_format",
            "-show_streams",
            as_file_url(path),
        ]
        try:
            async with asyncio.timeout(PROBE_TIMEOUT):
                done = await run_tool(argv)
        except (TimeoutError, OSError) as exc:
            log.warning("ffprobe could not read %s: %s", path.name, exc)
            return None
        if done.returncode != 0:
            return None
        try:
            report = json.loads(done.stdout)
        except ValueError:
            return None
        return media_info(report, path.suffix)


class ProbeMedia:
    name = "probe"

    def __init__(self, prober: Prober) -> None:
        self.prober = prober

    async def run(self, ctx: ProcessingContext) -> None:
        if not self.prober.tools.can_probe:
            # No ffprobe: nothing is known, so nothing is claimed (no `media` key at all).
            return
        info = await self.prober.probe(ctx.path)
        ctx.describe(info)
