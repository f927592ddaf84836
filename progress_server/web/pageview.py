"""What one row of the status page shows for a task, as text ready for the template.

The figures are formatted by progress_server.display, the rules the command line shares.
"""

from __future__ import annotations

from dataclasses import dataclass

from progress_server.display import (
    DASH,
    STATE_LABELS,
    display_name,
    host_of,
    progress_figures,
    shown_percentage,
)
from progress_server.models import Progress, Task, TaskState

__all__ = ["DASH", "STATE_LABELS", "TaskRow", "task_row"]


def _name(task: Task) -> str:
    produced = (task.result or {}).get("filename")
    return display_name(
        task.url,
        task.filename or task.requested_filename,
        produced if isinstance(produced, str) else None,
    )


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
    # A playlist's parent (#13): no file of its own to save.
    playlist: bool = False


def task_row(task: Task, live: Progress | None) -> TaskRow:
    progress = live or Progress(task.downloaded_bytes, task.total_bytes)
    percentage = shown_percentage(task.state, progress.percentage)
    shown = progress_figures(task.state, progress.to_wire())
    if task.state is TaskState.PROCESSING or (
        task.state is TaskState.DOWNLOADING and percentage is None
    ):
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
        name=_name(task),
        host=host_of(task.url),
        percentage=percentage,
        bar_value=bar_value,
        percentage_text=shown.percentage,
        size_text=shown.size,
        speed_text=shown.speed,
        eta_text=shown.eta,
        error_type=str(error.get("type", "")),
        error_message=str(error.get("message", "")),
        playlist=task.is_playlist,
    )
