"""How a task's figures and name read for people, on the status page and in the terminal alike.

Pure functions of plain values (the record's JSON figures), so the page (web/pageview.py)
and the command line (live_view.py, record_text.py) cannot drift apart. static/app.js
formats live updates in the browser by the same rules; tests/unit/test_display.py pins them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from progress_server.models import TaskState

# What stands where a figure is unknown or means nothing in the task's state.
DASH = "—"

# Each state's label and the symbol that tells it apart without colour.
STATE_LABELS: Mapping[str, tuple[str, str]] = {
    TaskState.PENDING: ("Queued", "○"),
    TaskState.DOWNLOADING: ("Downloading", "↓"),
    TaskState.PROCESSING: ("Processing", "⚙"),
    TaskState.COMPLETED: ("Completed", "✓"),
    TaskState.FAILED: ("Failed", "✕"),
    TaskState.CANCELLED: ("Cancelled", "⊘"),
    TaskState.PAUSED: ("Paused", "‖"),
}


# Binary units, the API's own (`size_mb` is bytes / 2^20): people read one unit family
# everywhere, sizes and speeds alike.
_KIB = 1024


def format_bytes(count: int | None) -> str:
    """Binary units, as `size_mb` is: `1023 B`, `1.4 MiB`, `2.0 GiB`."""
    if count is None:
        return DASH
    if count < _KIB:
        return f"{count} B"
    value = count / _KIB
    for unit in ("KiB", "MiB", "GiB"):
        if value < _KIB:
            return f"{value:.1f} {unit}"
        value /= _KIB
    return f"{value:.1f} TiB"


def format_size(downloaded: int, total: int | None, *, completed: bool = False) -> str:
    """`1.1 MiB / 2.4 MiB` while under way (`1.1 MiB` with no known total); a finished
    file's size once completed."""
    if completed:
        return format_bytes(total or downloaded)
    if total is None:
        return format_bytes(downloaded)
    return f"{format_bytes(downloaded)} / {format_bytes(total)}"


def format_speed(mbps: float | None) -> str:
    """`speed_mbps` (10^6 bytes/s) in the sizes' binary units: `830 KiB/s` or `3.1 MiB/s`;
    a dash when standing still."""
    if mbps is None or mbps <= 0:
        return DASH
    kib = mbps * 1_000_000 / _KIB
    if kib < _KIB:
        return f"{kib:.0f} KiB/s"
    return f"{kib / _KIB:.1f} MiB/s"


def format_eta(seconds: float | None) -> str:
    """`m:ss`, or `h:mm:ss` from an hour on; a dash when unknown."""
    if seconds is None:
        return DASH
    hours, rest = divmod(int(max(seconds, 0)), 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}:{minutes:02d}:{secs:02d}"
    return f"{minutes}:{secs:02d}"


def shown_percentage(state: str, percentage: float | None) -> float | None:
    """The percentage a row shows: a completed task reads 100 even when its size was never
    announced; a processing one finished downloading, and how far processing got is a
    figure of its own (None here)."""
    if state == TaskState.COMPLETED:
        return 100.0
    if state == TaskState.PROCESSING:
        return None
    return percentage


def format_percentage(percentage: float | None) -> str:
    """`45.5 %`; a dash while the total is unknown."""
    return DASH if percentage is None else f"{percentage:.1f} %"


@dataclass(frozen=True)
class Figures:
    """One task's progress as the page's cells read."""

    percentage: str
    size: str
    speed: str
    eta: str


def progress_figures(state: str, progress: Mapping[str, Any] | None) -> Figures:
    """The cells for a task in `state`; speed and ETA only while it downloads."""
    if not progress:
        return Figures(DASH, DASH, DASH, DASH)
    moving = state == TaskState.DOWNLOADING
    return Figures(
        percentage=format_percentage(shown_percentage(state, progress.get("percentage"))),
        size=format_size(
            progress.get("downloaded_bytes") or 0,
            progress.get("total_bytes"),
            completed=state == TaskState.COMPLETED,
        ),
        speed=format_speed(progress.get("speed_mbps")) if moving else DASH,
        eta=format_eta(progress.get("eta_seconds")) if moving else DASH,
    )


def display_name(url: str, filename: str | None, produced: str | None = None) -> str:
    """What to call a task: the file processing produced, else the file's name (given at
    submission or chosen from the origin), else the URL's last path segment, unquoted,
    else its host."""
    if produced:
        return produced
    if filename:
        return filename
    parts = urlsplit(url)
    last = unquote(parts.path.rsplit("/", 1)[-1])
    return last or parts.hostname or url


# Eighths of a column, left to right: how much of the bytes a column stands for arrived.
_EIGHTHS = " ▏▎▍▌▋▊▉█"


def segment_bar(segments: Sequence[Sequence[int]], total: int, width: int = 48) -> str:
    """A split download's parts as one thin bar: each column stands for `total / width`
    bytes and fills by the share of them received (`segments` are `[start, end, done]`,
    the record's *extra* field), so each connection's progress shows where it fetches."""
    if total <= 0 or width <= 0:
        return ""
    received = [(start, start + done) for start, _end, done in segments]
    columns = []
    for column in range(width):
        low, high = total * column // width, total * (column + 1) // width
        got = sum(max(0, min(high, b) - max(low, a)) for a, b in received)
        share = got / (high - low) if high > low else 1.0
        columns.append(_EIGHTHS[min(8, int(share * 8))])
    return "▕" + "".join(columns) + "▏"


def host_of(url: str) -> str:
    return urlsplit(url).hostname or ""
