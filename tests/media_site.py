"""A local video site for media tests: HLS streams ffmpeg makes at test time, pages that
embed them, and the faults that matter to a media task (slowness, stalls, a second host).

`MediaSite` listens on 127.0.0.1 and on 127.0.0.2 (same port), so a manifest on one can
point its fragments at the other: with only 127.0.0.1 allowed, that second host is the
"private" network the policy must refuse. Every URL under `/slow/{bytes_per_s}/` is served
throttled, and pages refer to their media relatively, so one prefix slows a whole page.
This module is imported by bench/ scripts as well, so it must not import pytest.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from aiohttp import web
from aiohttp.typedefs import Handler

from progress_server.media.errors import MediaError
from progress_server.media.results import ExtractedMedia

HLS_SECONDS = 30
MP4_SECONDS = 4

PAGES = {
    "one.html": (
        "<html><head><title>One Clip</title></head><body><h1>One Clip</h1>"
        '<video controls><source src="../media/hls/index.m3u8" type="application/x-mpegURL">'
        "</video></body></html>"
    ),
    "two.html": (
        "<html><head><title>Two Clips</title></head><body>"
        '<video controls src="../media/clip.mp4"></video><p>and</p>'
        '<video controls><source src="../media/hls/index.m3u8" type="application/x-mpegURL">'
        "</video></body></html>"
    ),
    "none.html": "<html><head><title>Nothing</title></head><body><p>No media.</p></body></html>",
}
# Pages that change after their first visit: a playlist whose entries are gone by the time
# each entry's own run extracts it again (the site changed under the playlist).
VANISHING = {"vanishing.html": ("two.html", "none.html")}


def _ffmpeg(*args: str, cwd: Path) -> None:
    cmd = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y", *args]
    subprocess.run(cmd, check=True, timeout=180, cwd=cwd)


def _sources(seconds: int, size: str = "320x240") -> list[str]:
    return [
        *("-f", "lavfi", "-i", f"testsrc=duration={seconds}:size={size}:rate=15"),
        *("-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}"),
    ]


# H.264 with a keyframe every 2 s (30 frames at 15 fps) so HLS cuts a fragment every 2 s.
_VIDEO = ["-c:v", "libx264", "-preset", "ultrafast", "-g", "30", "-keyint_min", "30"]
_VIDEO += ["-sc_threshold", "0"]
_AUDIO = ["-c:a", "aac", "-b:a", "64k"]
_HLS = ["-f", "hls", "-hls_time", "2", "-hls_playlist_type", "vod"]


def make_hls(folder: Path, seconds: int = HLS_SECONDS, size: str = "320x240") -> Path:
    """An HLS VOD stream (video and audio in one) in `folder`: index.m3u8 and a fragment
    every 2 s. Made once; a later call with the same folder reuses it."""
    if not (folder / "index.m3u8").exists():
        folder.mkdir(parents=True, exist_ok=True)
        _ffmpeg(
            *_sources(seconds, size), *_VIDEO, *_AUDIO, *_HLS,
            "-hls_segment_filename", "seg%03d.ts", "making.m3u8",
            cwd=folder,
        )  # fmt: skip
        (folder / "making.m3u8").rename(folder / "index.m3u8")
    return folder


def make_streams(folder: Path) -> Path:
    """The site's media in `folder`, made once: hls/ (video and audio in one stream, 15
    fragments), split/ (a master playlist with separate video and audio: yt-dlp merges
    them), clip.mp4 (4 s)."""
    folder.mkdir(parents=True, exist_ok=True)
    make_hls(folder / "hls")
    if not (folder / "split" / "master.m3u8").exists():
        (folder / "split").mkdir(exist_ok=True)
        _ffmpeg(
            *_sources(HLS_SECONDS), "-map", "0:v", "-map", "1:a", *_VIDEO, *_AUDIO, *_HLS,
            "-var_stream_map", "v:0,agroup:aud a:0,agroup:aud",
            "-master_pl_name", "master.m3u8",
            "-hls_segment_filename", "stream_%v/seg%03d.ts", "stream_%v/index.m3u8",
            cwd=folder / "split",
        )  # fmt: skip
    if not (folder / "clip.mp4").exists():
        _ffmpeg(
            *_sources(MP4_SECONDS), *_VIDEO, *_AUDIO, "-movflags", "+faststart", "making.mp4",
            cwd=folder,
        )  # fmt: skip
        (folder / "making.mp4").rename(folder / "clip.mp4")
    return folder


@dataclass(frozen=True)
class Hit:
    host: str
    path: str


class MediaSite:
    HOSTS = ("127.0.0.1", "127.0.0.2")

    def __init__(self, media_dir: Path) -> None:
        self.media_dir = media_dir
        self.port = 0
        self.hits: list[Hit] = []
        self._runner: web.AppRunner | None = None

    async def __aenter__(self) -> Self:
        @web.middleware
        async def record(request: web.Request, handler: Handler) -> web.StreamResponse:
            sockname = request.transport.get_extra_info("sockname") if request.transport else None
            self.hits.append(Hit(str(sockname[0]) if sockname else "?", request.path))
            return await handler(request)

        app = web.Application(middlewares=[record])
        for prefix in ("", "/slow/{rate:\\d+}"):
            app.router.add_get(prefix + "/media/{path:.+}", self._media)
            app.router.add_get(prefix + "/page/{name}", self._page)
            app.router.add_get(prefix + "/elsewhere/{path:.+}", self._elsewhere)
            app.router.add_get(prefix + "/redirected/{path:.+}", self._redirected)
        app.router.add_get("/stall/{name}", self._stall)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        first = web.TCPSite(self._runner, self.HOSTS[0], 0)
        await first.start()
        self.port = int(self._runner.addresses[0][1])
        await web.TCPSite(self._runner, self.HOSTS[1], self.port).start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def url(self, path: str, host: str = "127.0.0.1", rate: int | None = None) -> str:
        prefix = f"/slow/{rate}" if rate else ""
        return f"http://{host}:{self.port}{prefix}{path}"

    def hits_on(self, host: str) -> list[Hit]:
        return [h for h in self.hits if h.host == host]

    def fragment_hits(self) -> int:
        return sum(1 for h in self.hits if h.path.endswith(".ts"))

    # -- handlers --------------------------------------------------------------------

    def _file(self, relative: str) -> Path:
        path = (self.media_dir / relative).resolve()
        if self.media_dir.resolve() not in path.parents or not path.is_file():
            raise web.HTTPNotFound()
        return path

    async def _media(self, request: web.Request) -> web.StreamResponse:
        path = self._file(request.match_info["path"])
        rate = request.match_info.get("rate")
        if not rate:
            return web.FileResponse(path)
        return await _throttled(request, path, int(rate))

    async def _page(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name in VANISHING:
            first, later = VANISHING[name]
            seen = sum(1 for hit in self.hits if hit.path.endswith(f"/page/{name}"))
            name = first if seen <= 1 else later
        html = PAGES.get(name)
        if html is None:
            raise web.HTTPNotFound()
        return web.Response(text=html, content_type="text/html")

    async def _elsewhere(self, request: web.Request) -> web.Response:
        """The manifest `path` with every fragment made absolute on the second host."""
        return self._rewritten(request, f"http://{self.HOSTS[1]}:{self.port}")

    async def _redirected(self, request: web.Request) -> web.StreamResponse:
        """The manifest `path` as is, so its relative fragments resolve under /redirected/
        too: and any other file there is a 302 to the same file on the second host."""
        relative = request.match_info["path"]
        if relative.endswith(".m3u8"):
            return self._rewritten(request, None)
        raise web.HTTPFound(f"http://{self.HOSTS[1]}:{self.port}/media/{relative}")

    def _rewritten(self, request: web.Request, base: str | None) -> web.Response:
        relative = request.match_info["path"]
        folder = relative.rsplit("/", 1)[0] if "/" in relative else ""
        text = self._file(relative).read_text()
        if base is None:
            # Relative lines stay relative: they resolve under /redirected/, which redirects.
            return web.Response(text=text, content_type="application/vnd.apple.mpegurl")
        lines = [
            f"{base}/media/{folder}/{line}" if line and not line.startswith("#") else line
            for line in text.splitlines()
        ]
        return web.Response(text="\n".join(lines) + "\n", content_type="application/x-mpegURL")

    async def _stall(self, request: web.Request) -> web.StreamResponse:
        """Sends headers and a little HTML, then nothing, for a minute."""
        response = web.StreamResponse(headers={"Content-Type": "text/html"})
        await response.prepare(request)
        await response.write(b"<html><head><title>slow</title>")
        await asyncio.sleep(60)
        return response


async def _throttled(request: web.Request, path: str | Path, rate: int) -> web.StreamResponse:
    data = Path(path).read_bytes()
    start = 0
    match = re.fullmatch(r"bytes=(\d+)-", request.headers.get("Range", ""))
    if match and int(match.group(1)) < len(data):
        start = int(match.group(1))
    status = 206 if start else 200
    headers = {"Content-Length": str(len(data) - start), "Accept-Ranges": "bytes"}
    if start:
        headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
    response = web.StreamResponse(status=status, headers=headers)
    await response.prepare(request)
    chunk = max(1024, rate // 20)
    loop = asyncio.get_running_loop()
    began = loop.time()
    sent = 0
    try:
        for pos in range(start, len(data), chunk):
            piece = data[pos : pos + chunk]
            await response.write(piece)
            sent += len(piece)
            ahead = sent / rate - (loop.time() - began)
            if ahead > 0:
                await asyncio.sleep(ahead)
        await response.write_eof()
    except ConnectionError:
        pass  # the client went away (a cancel or a kill, as the test meant)
    return response


# -- processes ---------------------------------------------------------------------------


def descendants(pid: int | None = None) -> list[int]:
    """Live (not zombie) processes below `pid` (default: this one), from /proc."""
    root = os.getpid() if pid is None else pid
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name may hold spaces or parentheses: fields start after the last ")".
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] == "Z":
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    found: list[int] = []
    todo = list(children.get(root, []))
    while todo:
        child = todo.pop()
        found.append(child)
        todo.extend(children.get(child, []))
    return found


def process_group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def kill_group(pgid: int) -> None:
    os.killpg(pgid, signal.SIGKILL)


# -- an observer that writes down what a media transfer told it ------------------------


class RecordingObserver:
    """Keeps every call, and the percentage a client would have seen after each one.

    Progress is shown when bytes arrive (response_started, received), as the server's
    runner does; total_changed alone only updates the figure the next one shows."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[object, ...]]] = []
        self.extracted: ExtractedMedia | None = None
        self.downloaded = 0
        self.total: int | None = None
        self.percentages: list[float] = []
        self.fragments_seen: list[tuple[int, int | None]] = []
        self.processing_steps: list[tuple[str, float | None]] = []
        self.failures: list[tuple[MediaError, int]] = []
        self.offsets: list[int] = []
        self.first_bytes = asyncio.Event()
        self.received_bytes = 0
        self.started_at: float | None = None
        self.last_received_at: float | None = None

    @property
    def percentage(self) -> float | None:
        """What a progress event would show now."""
        return 100.0 * self.downloaded / self.total if self.total else None

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]

    def _seen(self) -> None:
        if self.total:
            self.percentages.append(100.0 * self.downloaded / self.total)

    async def media_extracted(self, media: ExtractedMedia) -> None:
        self.calls.append(("media_extracted", (media,)))
        self.extracted = media

    async def response_started(
        self, offset: int, total: int | None, etag: str | None, last_modified: str | None
    ) -> None:
        self.calls.append(("response_started", (offset, total)))
        self.offsets.append(offset)
        self.started_at = time.monotonic()
        self.downloaded, self.total = offset, total
        self._seen()

    async def total_changed(self, total: int | None) -> None:
        self.calls.append(("total_changed", (total,)))
        self.total = total

    async def received(self, nbytes: int) -> None:
        self.calls.append(("received", (nbytes,)))
        self.downloaded += nbytes
        self.received_bytes += nbytes
        self.last_received_at = time.monotonic()
        self._seen()
        self.first_bytes.set()

    async def fragments(self, index: int, count: int | None) -> None:
        self.calls.append(("fragments", (index, count)))
        self.fragments_seen.append((index, count))

    async def processing(self, step: str, percentage: float | None) -> None:
        self.calls.append(("processing", (step, percentage)))
        self.processing_steps.append((step, percentage))

    async def attempt_failed(self, error: MediaError, attempt: int, delay: float) -> None:
        self.calls.append(("attempt_failed", (error, attempt, delay)))
        self.failures.append((error, attempt))
