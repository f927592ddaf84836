"""The media worker: one yt-dlp run in its own process, reporting JSON lines on stdout.

Run as `python -m progress_server.media.worker` with a MediaJob as one JSON line on stdin.
With `--supervised` (how MediaTransfer starts it) stdin stays open for the worker's life,
and its end, when the server exits or is killed -9, takes the whole process group down.
It extracts (one `extracted` or `playlist` line), downloads with yt-dlp's Python API
(`progress` and `postprocess` lines from its hooks), and ends with `finished` or a typed
`error` line. Nothing else is written to stdout; yt-dlp's own messages go to stderr.
Exit status: 0 done, 1 a reported error, 2 a bad job.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from progress_server.filenames import sanitise
from progress_server.media.errors import INTERNAL_ERROR, MediaError, classify, clean_message
from progress_server.media.job import MediaJob
from progress_server.media.netguard import NetworkGuard
from progress_server.media.reporting import (
    EventStream,
    PostprocessReporter,
    ProgressReporter,
    StderrLogger,
)
from progress_server.netpolicy import NetworkPolicy, parse_networks

PLAYLIST_TYPES = ("playlist", "multi_video")
PROBE_TIMEOUT = 60


def params_for(
    job: MediaJob, progress: ProgressReporter, post: PostprocessReporter
) -> dict[str, Any]:
    """yt-dlp's options for this job: resumable, quiet, nothing written outside output_dir."""
    params: dict[str, Any] = {
        "format": job.format,
        "paths": {"home": str(job.output_dir), "temp": str(job.output_dir)},
        "outtmpl": {"default": "%(title).200B [%(id)s].%(ext)s"},
        "continuedl": True,
        "nopart": False,
        "noplaylist": not job.playlist,
        # Entries of a playlist are listed, not each resolved: every entry becomes a task
        # of its own that extracts itself.
        "extract_flat": "in_playlist",
        "retries": job.retries,
        "fragment_retries": job.fragment_retries,
        "socket_timeout": job.socket_timeout,
        "quiet": True,
        "noprogress": True,
        "no_color": True,
        "logger": StderrLogger(),
        "progress_hooks": [progress],
        "postprocessor_hooks": [post],
        # yt-dlp's cache would live in ~/.cache; the server writes only in its data dir.
        "cachedir": False,
        "updatetime": False,
        "hls_prefer_native": True,
    }
    if job.ratelimit:
        params["ratelimit"] = job.ratelimit
    if job.playlist_index is not None:
        params["playlist_items"] = str(job.playlist_index)
    return params


def file_stem(title: str | None, fallback: str) -> str:
    """The file's name before its extension: the title sanitised like any origin's name."""
    return sanitise(title or "") or sanitise(fallback) or "media"


class WorkerRun:
    """One job: extract, then list a playlist or download the one video, reporting each."""

    def __init__(self, job: MediaJob, events: EventStream, guard: NetworkGuard) -> None:
        self.job = job
        self.events = events
        self.guard = guard
        self.progress = ProgressReporter(events, [])
        self.post = PostprocessReporter(events)

    def run(self) -> int:
        from yt_dlp import YoutubeDL

        guard = self.guard

        class GuardedYoutubeDL(YoutubeDL):  # type: ignore[misc]
            def urlopen(self, req: Any) -> Any:
                guard.check_url(req if isinstance(req, str) else req.url)
                return super().urlopen(req)

        self.job.output_dir.mkdir(parents=True, exist_ok=True)
        with GuardedYoutubeDL(params_for(self.job, self.progress, self.post)) as ydl:
            if guard.active:
                _drop_unguarded_handlers(ydl)
            video = self._extract(ydl)
            if video is None:
                return 0
            return self._download(ydl, video)

    def _extract(self, ydl: Any) -> dict[str, Any] | None:
        """The one video to download (after an `extracted` line), or None for a playlist."""
        info: dict[str, Any]
        try:
            info = ydl.extract_info(self.job.url, download=False)
            if info is None:
                raise MediaError("extract_error", "yt-dlp found nothing to download")
            if info.get("_type") in PLAYLIST_TYPES:
                entries = [e for e in info.get("entries") or [] if e]
                if not entries:
                    raise MediaError("extract_error", "the playlist has no entries")
                if self.job.playlist and self.job.playlist_index is None:
                    self._report_playlist(info, entries)
                    return None
                # One item: the one asked for (playlist_items kept only it), else the first.
                info = entries[0]
            if info.get("_type") in ("url", "url_transparent"):
                info = ydl.process_ie_result(info, download=False)
        except MediaError:
            raise
        except Exception as exc:
            raise self._classified(exc, extracting=True) from exc
        self._report_extracted(ydl, info)
        return info

    def _report_playlist(self, info: dict[str, Any], entries: list[dict[str, Any]]) -> None:
        listed = []
        for position, entry in enumerate(entries, start=1):
            url = entry.get("url") if entry.get("_type") in ("url", "url_transparent") else None
            listed.append(
                {
                    "index": entry.get("playlist_index") or position,
                    "id": entry.get("id"),
                    "title": entry.get("title"),
                    "duration": entry.get("duration"),
                    # Its own URL when the site gives one; else the entry is reached as
                    # item `index` of the playlist's URL (MediaJob.playlist_index).
                    "url": url,
                }
            )
        self.events.emit(
            "playlist",
            id=info.get("id"),
            title=info.get("title"),
            webpage_url=info.get("webpage_url") or self.job.url,
            entries=listed,
        )

    def _report_extracted(self, ydl: Any, info: dict[str, Any]) -> None:
        requested = info.get("requested_formats") or [info]
        self.progress.part_ids = [str(f.get("format_id") or "") for f in requested]
        stem = file_stem(self.job.title or info.get("title"), str(info.get("id") or ""))
        # The title is a literal in yt-dlp's template: its own "%" must not expand.
        ydl.params["outtmpl"] = {"default": stem.replace("%", "%%") + ".%(ext)s"}
        self.events.emit(
            "extracted",
            id=info.get("id"),
            title=info.get("title"),
            duration=info.get("duration"),
            extractor=info.get("extractor_key"),
            webpage_url=info.get("webpage_url"),
            format_id=info.get("format_id"),
            ext=info.get("ext"),
            filename=f"{stem}.{info.get('ext') or 'mp4'}",
            parts=[
                {
                    "format_id": f.get("format_id"),
                    "ext": f.get("ext"),
                    "protocol": f.get("protocol"),
                    "vcodec": f.get("vcodec"),
                    "acodec": f.get("acodec"),
                    "size": f.get("filesize") or f.get("filesize_approx"),
                    "tbr": f.get("tbr"),
                }
                for f in requested
            ],
        )

    def _download(self, ydl: Any, info: dict[str, Any]) -> int:
        try:
            # As yt-dlp's own --load-info-json does: the extracted info, downloaded as is.
            result = ydl.process_ie_result(ydl.sanitize_info(info, True), download=True)
        except Exception as exc:
            raise self._classified(exc, extracting=False) from exc
        downloads = (result or {}).get("requested_downloads") or [result or {}]
        filepath = downloads[0].get("filepath") or downloads[0].get("_filename")
        if not filepath or not Path(filepath).is_file():
            raise MediaError(INTERNAL_ERROR, "yt-dlp reported no downloaded file")
        path = Path(filepath)
        duration = info.get("duration") or probe_duration(path)
        self.events.emit(
            "finished",
            filepath=str(path),
            filename=path.name,
            size=path.stat().st_size,
            title=info.get("title"),
            duration=duration,
        )
        return 0

    def _classified(self, exc: BaseException, *, extracting: bool) -> MediaError:
        if isinstance(exc, MediaError):
            return exc
        if self.guard.refused:
            # The guard's refusal may reach us wrapped as a "network" failure; it is not.
            return MediaError("invalid_url", str(self.guard.refused[0]))
        return classify(exc, extracting=extracting)


def _drop_unguarded_handlers(ydl: Any) -> None:
    """libcurl (curl_cffi) connects from C, past the socket guard: not under the policy."""
    director = getattr(ydl, "_request_director", None)
    handlers = getattr(director, "handlers", None)
    if isinstance(handlers, dict):
        for key in [k for k in handlers if "curl" in str(k).lower()]:
            handlers.pop(key).close()


def probe_duration(path: Path) -> float | None:
    """The file's duration by ffprobe, for extractors (plain manifests) that give none."""
    ffprobe = shutil.which("ffprobe")
    if ffprobe is None:
        return None
    try:
        out = subprocess.run(
            [ffprobe, "-v", "error", "-print_format", "json", "-show_format", f"file:{path}"],
            capture_output=True,
            check=True,
            timeout=PROBE_TIMEOUT,
        ).stdout
        return float(json.loads(out)["format"]["duration"])
    except (OSError, subprocess.SubprocessError, ValueError, KeyError, TypeError):
        return None


def _die_with_parent() -> None:
    """Wait for stdin's end, then kill this process group (yt-dlp and ffmpeg with it).

    The worker runs in a session of its own, so a server killed with -9 would otherwise
    leave it downloading into the folder that the restarted server's next run resumes.
    It reads the raw descriptor: sys.stdin.buffer would hold its lock while blocked, and
    the interpreter's shutdown waits a second for that lock, then aborts (SIGABRT), so
    every run, done or failed, would end a second late.
    """
    fd = sys.stdin.fileno()
    while os.read(fd, 65536):
        pass
    os.killpg(os.getpgrp(), signal.SIGKILL)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    events = EventStream.take_stdout()
    try:
        job = MediaJob.from_json(sys.stdin.readline())
        if "--supervised" in args:
            threading.Thread(target=_die_with_parent, daemon=True).start()
        policy = NetworkPolicy(
            job.deny_private, parse_networks(job.allow_networks), loopback_only=job.loopback_only
        )
    except (ValueError, TypeError) as exc:
        events.emit("error", **_fields(MediaError(INTERNAL_ERROR, f"bad media job: {exc}")))
        return 2
    try:
        import yt_dlp  # noqa: F401
    except ImportError:
        message = "yt-dlp is not installed: pip install 'progress-server[media]'"
        events.emit("error", **_fields(MediaError(INTERNAL_ERROR, message)))
        return 1
    guard = NetworkGuard(policy)
    guard.install()
    try:
        return WorkerRun(job, events, guard).run()
    except MediaError as error:
        events.emit("error", **_fields(error))
    except Exception as exc:
        unexpected = MediaError(INTERNAL_ERROR, clean_message(f"{type(exc).__name__}: {exc}"))
        events.emit("error", **_fields(unexpected))
    return 1


def _fields(error: MediaError) -> dict[str, Any]:
    fields = error.to_event()
    fields.pop("event")
    return fields


if __name__ == "__main__":
    sys.exit(main())
