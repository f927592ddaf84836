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

# Extensions and leading bytes of the containers ffprobe reads. Sniffing first spares a
# subprocess (and its fork on the event loop) for every download that is plainly not media:
# measured, 100 small .bin files took 17 s with a probe each and 3 s without.
MEDIA_SUFFIXES = frozenset(
    ".mp4 .m4v .m4a .mov .3gp .mkv .webm .mka .avi .wav .mp3 .aac .flac .ogg .oga .ogv .opus"
    " .flv .ts .m2ts .mts .mpg .mpeg .vob .wmv .wma .asf .aiff .aif .ac3 .dts .amr .caf".split()
)
_SNIFF_BYTES = 189  # an MPEG-TS packet is 188 bytes; two sync bytes identify it


def looks_like_media(path: Path) -> bool:
    if path.suffix.lower() in MEDIA_SUFFIXES:
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(_SNIFF_BYTES)
    except OSError:
        return False
    return (
        head[4:8] == b"ftyp"  # MP4, MOV, 3GP, M4A
        or head.startswith(b"\x1a\x45\xdf\xa3")  # Matroska, WebM
        or (head.startswith(b"RIFF") and head[8:12] in (b"AVI ", b"WAVE"))
        or head.startswith((b"ID3", b"OggS", b"fLaC", b"FLV", b"FORM", b"#!AMR"))
        or head.startswith((b"\x00\x00\x01\xba", b"\x00\x00\x01\xb3"))  # MPEG-PS/ES
        or head.startswith(b"\x30\x26\xb2\x75")  # ASF, WMV
        or (len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0)  # MP3/AAC frames
        or (len(head) > 188 and head[0] == head[188] == 0x47)  # MPEG-TS sync bytes
    )


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
        # A requested transcode is the user saying "this is media": always ask ffprobe then.
        wants_transcode = bool((ctx.task.options.get("post_process") or {}).get("transcode"))
        if not wants_transcode and not await asyncio.to_thread(looks_like_media, ctx.path):
            ctx.describe(None)
            return
        info = await self.prober.probe(ctx.path)
        ctx.describe(info)
