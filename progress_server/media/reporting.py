"""The worker's side of its JSON lines: the event stream and yt-dlp's hooks feeding it.

stdout belongs to the events alone. yt-dlp, and every program it starts (ffmpeg), would
otherwise write its own text there, so the worker moves the real stdout to a private
descriptor and points fd 1 at stderr before anything else runs.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

# Hooks fire per chunk read (thousands a second on a fast link); a line this often is
# plenty for a bar refreshed every 0.25 s, while fragment changes and part ends always go.
PROGRESS_EVERY = 0.1
MERGE_POLL = 0.25


class EventStream:
    """One JSON object per line on the worker's original stdout, from any thread."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._lock = threading.Lock()

    @classmethod
    def take_stdout(cls) -> EventStream:
        sys.stdout.flush()
        private = os.dup(1)
        os.dup2(2, 1)
        sys.stdout = sys.stderr
        return cls(os.fdopen(private, "w", encoding="utf-8", buffering=1))

    def emit(self, event: str, **fields: Any) -> None:
        line = json.dumps({"event": event, **fields}, default=str)
        with self._lock:
            self._out.write(line + "\n")
            self._out.flush()


def _int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int(value)


class ProgressReporter:
    """yt-dlp's progress_hooks, mapped to `progress` lines naming which requested part."""

    def __init__(self, events: EventStream, part_ids: list[str]) -> None:
        self.events = events
        self.part_ids = part_ids
        self._last_at = 0.0
        self._last_key: tuple[Any, ...] = ()

    def part_of(self, info: dict[str, Any]) -> int:
        format_id = str(info.get("format_id") or "")
        if format_id in self.part_ids:
            return self.part_ids.index(format_id)
        return 0

    def __call__(self, d: dict[str, Any]) -> None:
        status = d.get("status")
        if status not in ("downloading", "finished"):
            return
        total = _int(d.get("total_bytes"))
        downloaded = _int(d.get("downloaded_bytes"))
        if downloaded is None:
            # "has already been downloaded" reports only the size of the file on disk.
            downloaded = total if status == "finished" else 0
        part = self.part_of(d.get("info_dict") or {})
        fragment = (_int(d.get("fragment_index")), _int(d.get("fragment_count")))
        key = (part, status, fragment)
        now = time.monotonic()
        if key == self._last_key and now - self._last_at < PROGRESS_EVERY:
            return
        self._last_key, self._last_at = key, now
        self.events.emit(
            "progress",
            status=status,
            part=part,
            downloaded=downloaded,
            total=total,
            estimate=_int(d.get("total_bytes_estimate")),
            fragment_index=fragment[0],
            fragment_count=fragment[1],
            filename=Path(str(d.get("filename") or "")).name or None,
        )


class PostprocessReporter:
    """yt-dlp's postprocessor_hooks; while ffmpeg merges, its output's growth as progress.

    A merge copies the streams (`-c copy`), so the output ends about as large as its inputs
    together: their ratio is the merge's progress, read without touching ffmpeg itself.
    """

    def __init__(self, events: EventStream) -> None:
        self.events = events
        self._stop: threading.Event | None = None

    def __call__(self, d: dict[str, Any]) -> None:
        status = d.get("status")
        name = str(d.get("postprocessor") or "")
        info = d.get("info_dict") or {}
        if status == "started":
            self.events.emit("postprocess", postprocessor=name, status="started")
            if name == "Merger":
                self._watch_merge(info)
        elif status == "finished":
            self._end_watch()
            self.events.emit("postprocess", postprocessor=name, status="finished")

    def _watch_merge(self, info: dict[str, Any]) -> None:
        target = info.get("filepath")
        inputs = [Path(p) for p in info.get("__files_to_merge") or []]
        if not target or not inputs:
            return
        stem, dot, ext = str(target).rpartition(".")
        temp = Path(f"{stem}.temp.{ext}" if dot else f"{target}.temp")
        expected = sum(p.stat().st_size for p in inputs if p.exists())
        stop = self._stop = threading.Event()
        report = self._merge_reporter(temp, expected)
        threading.Thread(target=self._poll, args=(stop, report), daemon=True).start()

    def _merge_reporter(self, temp: Path, expected: int) -> Callable[[], None]:
        shown = -1.0

        def report() -> None:
            nonlocal shown
            try:
                size = temp.stat().st_size
            except OSError:
                return
            percentage = round(min(99.9, 100.0 * size / expected), 1) if expected else None
            if percentage is not None and percentage > shown:
                shown = percentage
                self.events.emit(
                    "postprocess",
                    postprocessor="Merger",
                    status="processing",
                    percentage=percentage,
                )

        return report

    @staticmethod
    def _poll(stop: threading.Event, report: Callable[[], None]) -> None:
        while not stop.wait(MERGE_POLL):
            report()

    def _end_watch(self) -> None:
        if self._stop is not None:
            self._stop.set()
            self._stop = None


class StderrLogger:
    """yt-dlp's `logger`: its warnings and errors go to stderr, the parent keeps the tail."""

    def debug(self, message: str) -> None:
        # yt-dlp's screen messages ("[generic] Extracting URL") arrive here too.
        if not message.startswith("[debug] "):
            print(message, file=sys.stderr, flush=True)

    def info(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    def warning(self, message: str) -> None:
        print(f"WARNING: {message}", file=sys.stderr, flush=True)

    def error(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)
