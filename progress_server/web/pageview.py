"""What one row of the status page shows for a task, as text ready for the template.

static/app.js formats live updates the same way (`formatBytes`, `formatSpeed`,
`formatEta`); keep the two in step so a reload never changes how a number reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from progress_server.models import Progress, Task, TaskState

DASH = "—"

STATE_LABELS = {
    TaskState.PENDING: ("Queued", "○"),
    TaskState.DOWNLOADING: ("Downloading", "↓"),
    TaskState.PROCESSING: ("Processing", "⚙"),
    TaskState.COMPLETED: ("Completed", "✓"),
    TaskState.FAILED: ("Failed", "✕"),
    TaskState.CANCELLED: ("Cancelled", "⊘"),
    TaskState.PAUSED: ("Paused", "‖"),
}


def format_bytes(count: int | None) -> str:
    if count is None:
        return DASH
    if count < 1000:
        return f"{count} B"
    value = count / 1000
    for unit in ("kB", "MB", "GB"):
        if value < 1000:
            return f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"


def format_speed(mbps: float) -> str:
    if mbps <= 0:
        return DASH
    if mbps < 1:
        return f"{mbps * 1000:.0f} kB/s"
    return f"{mbps:.1f} MB/s"


def format_eta(seconds: int | None) -> str:
    if seconds is None:
        return DASH
    hours, rest = divmod(max(seconds, 0), 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}:{minutes:02d}:{secs:02d}"
    return f"{minutes}:{secs:02d}"


def display_name(task: Task) -> str:
    produced = (task.result or {}).get("filename")
    if isinstance(produced, str) and produced:
        return produced
    if task.filename or task.requested_filename:
        return task.filename or task.requested_filename or ""
    parts = urlsplit(task.url)
    last = unquote(parts.path.rsplit("/", 1)[-1])
    return last or parts.hostname or task.url


@dataclass(frozen=True)
class TaskRow:
    task_id: str
    state: str
    state_label: str
    state_icon: str
    name: str
    host: str
    percentage: float | None
    # The <progress> value; None makes the bar indeterminate (work with no known end).
    bar_value: float | None
    percentage_text: str
    size_text: str
    speed_text: str
    eta_text: str
    error_type: str
    error_message: str


def task_row(task: Task, live: Progress | None) -> TaskRow:
    progress = live or Progress(task.downloaded_bytes, task.total_bytes)
    moving = task.state is TaskState.DOWNLOADING
    if task.state is TaskState.COMPLETED:
        percentage: float | None = 100.0
    elif task.state is TaskState.PROCESSING:
        # The download is done; how far processing got arrives live, over the socket.
        percentage = None
    else:
        percentage = progress.percentage
    if progress.total_bytes is None:
        size = format_bytes(progress.downloaded_bytes)
    else:
        size = f"{format_bytes(progress.downloaded_bytes)} / {format_bytes(progress.total_bytes)}"
    if task.state is TaskState.COMPLETED:
        size = format_bytes(progress.total_bytes or progress.downloaded_bytes)
    if task.state is TaskState.PROCESSING or (moving and percentage is None):
        bar_value = None
    else:
        bar_value = percentage or 0.0
    label, icon = STATE_LABELS[task.state]
    error = task.error or {}
    return TaskRow(
        task_id=task.task_id,
        state=task.state.value,
        state_label=label,
        state_icon=icon,
        name=display_name(task),
        host=urlsplit(task.url).hostname or "",
        percentage=percentage,
        bar_value=bar_value,
        percentage_text=DASH if percentage is None else f"{percentage:.1f} %",
        size_text=size,
        speed_text=format_speed(progress.speed_mbps) if moving else DASH,
        eta_text=format_eta(progress.eta_seconds) if moving else DASH,
        error_type=str(error.get("type", "")),
        error_message=str(error.get("message", "")),
    )
