"""Following tasks from a terminal: live progress bars (rich) fed by the WebSocket.

On a terminal each task gets a bar; when the output is a pipe or a file, the same events
become plain lines (a state change at once, progress at most once a second per task), so
logs of `progress-server add URL --wait` in scripts and CI stay readable.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn

from progress_server.client import (
    FINAL_STATES,
    ApiError,
    Event,
    ProgressClient,
    ProgressInfo,
    TaskError,
    TaskRecord,
)

# States told apart by a symbol as well as by colour.
STATE_STYLE = {
    "pending": ("·", "dim"),
    "downloading": ("↓", "cyan"),
    "processing": ("⚙", "magenta"),
    "completed": ("✓", "green"),
    "failed": ("✗", "red"),
    "cancelled": ("⊘", "yellow"),
    "paused": ("‖", "yellow"),
}
PLAIN_PROGRESS_EVERY = 1.0


def fmt_bytes(count: int | None) -> str:
    if count is None:
        return "?"
    value = float(count)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def fmt_eta(seconds: int | None) -> str:
    if seconds is None:
        return "--:--"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def fmt_percentage(progress: ProgressInfo | None) -> str:
    if progress is None or progress.get("percentage") is None:
        return "?"
    return f"{progress['percentage']:.1f}%"


def display_name(record: TaskRecord) -> str:
    """The file name, or the last part of the URL path until the origin has named it."""
    result = record.get("result")
    if result and result.get("filename"):
        return result["filename"]
    if record.get("filename"):
        return str(record["filename"])
    tail = record["url"].split("?", 1)[0].split("#", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    return tail or record["url"]


@dataclass
class TaskView:
    """What the terminal knows about one task."""

    record: TaskRecord
    state: str
    progress: ProgressInfo | None
    processing: dict[str, Any] | None = None
    error: TaskError | None = None
    last_plain: float = field(default=0.0)

    @property
    def task_id(self) -> str:
        return self.record["task_id"]

    @property
    def name(self) -> str:
        return display_name(self.record)

    def apply(self, event: Event) -> bool:
        """Take in one event; True if the state changed."""
        before = self.state
        if "state" in event:
            self.state = event["state"]
        if "progress" in event:
            self.progress = event["progress"]
        if event.get("event") == "download.processing" and "processing" in event:
            self.processing = event["processing"]
        elif self.state != "processing":
            self.processing = None
        if "error" in event:
            self.error = event["error"]
        if "result" in event:
            self.record["result"] = event["result"]
            if self.progress is not None and self.progress.get("total_bytes"):
                self.progress = {**self.progress, "percentage": 100.0, "eta_seconds": 0}
        return self.state != before


class LiveView:
    """Bars on a terminal, plain lines elsewhere; one row per task."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.plain = not console.is_terminal
        self.views: dict[str, TaskView] = {}
        self._bars: Progress | None = None
        self._bar_ids: dict[str, TaskID] = {}
        if not self.plain:
            self._bars = Progress(
                TextColumn("{task.fields[symbol]}"),
                TextColumn("{task.description}", table_column=None),
                BarColumn(bar_width=None),
                TextColumn("{task.fields[pct]:>6}"),
                TextColumn("{task.fields[size]:>21}"),
                TextColumn("{task.fields[speed]:>11}"),
                TextColumn("{task.fields[eta]:>8}"),
                console=console,
                refresh_per_second=8,
                expand=True,
            )

    def __enter__(self) -> LiveView:
        if self._bars is not None:
            self._bars.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bars is not None:
            for view in self.views.values():
                self._draw(view)
            self._bars.stop()

    def add(self, record: TaskRecord) -> TaskView:
        view = TaskView(record, record["state"], record.get("progress"))
        if record.get("error"):
            view.error = record["error"]
        self.views[view.task_id] = view
        if self._bars is not None:
            self._bar_ids[view.task_id] = self._bars.add_task(
                view.name, total=None, symbol="", pct="", size="", speed="", eta=""
            )
            self._draw(view)
        else:
            self._line(view, force=True)
        return view

    def apply(self, event: Event) -> None:
        view = self.views[event["task_id"]]
        changed = view.apply(event)
        if self._bars is not None:
            self._draw(view)
        else:
            self._line(view, force=changed or event.get("event") != "download.progress")

    def note(self, message: str) -> None:
        self.console.print(message, style="yellow", highlight=False)

    def finished(self, ids: Iterable[str] | None = None, paused_counts: bool = False) -> bool:
        done = FINAL_STATES | ({"paused"} if paused_counts else set())
        chosen = self.views.values() if ids is None else [self.views[i] for i in ids]
        return all(view.state in done for view in chosen)

    def failures(self) -> list[TaskView]:
        return [v for v in self.views.values() if v.state in ("failed", "cancelled")]

    def _draw(self, view: TaskView) -> None:
        assert self._bars is not None
        symbol, style = STATE_STYLE.get(view.state, ("?", ""))
        progress: dict[str, Any] = dict(view.progress or {})
        total = progress.get("total_bytes")
        done = progress.get("downloaded_bytes") or 0
        label = view.state
        if view.processing is not None:
            step = view.processing.get("step") or "processing"
            label = f"processing: {step}"
            pct = view.processing.get("percentage")
            total, done = (100, int(pct)) if isinstance(pct, int | float) else (None, 0)
        elif view.state == "completed":
            total = total or done or 1
            done = total
        elif view.state in ("failed", "cancelled", "paused"):
            # A stopped bar must not pulse as if something were happening.
            total = total or done or 1
        size = f"{fmt_bytes(done)}/{fmt_bytes(total)}" if view.processing is None else ""
        speed = f"{progress.get('speed_mbps', 0.0):.1f} MB/s" if view.state == "downloading" else ""
        eta = fmt_eta(progress.get("eta_seconds")) if view.state == "downloading" else ""
        if view.state == "failed" and view.error:
            label = f"failed: {view.error.get('type', '')}"
        pct_text = f"{100 * done / total:.1f}%" if total else "?"
        self._bars.update(
            self._bar_ids[view.task_id],
            description=f"[{style}]{_fit(view.name, 32)}[/] [{style}]{label}[/]",
            total=total,
            completed=done,
            symbol=f"[{style}]{symbol}[/]",
            pct=pct_text,
            size=size,
            speed=speed,
            eta=eta,
        )

    def _line(self, view: TaskView, force: bool) -> None:
        now = time.monotonic()
        if not force and now - view.last_plain < PLAIN_PROGRESS_EVERY:
            return
        view.last_plain = now
        progress: dict[str, Any] = dict(view.progress or {})
        parts = [view.task_id[:8], view.name, view.state]
        if view.processing is not None:
            parts.append(f"{view.processing.get('step')} {view.processing.get('percentage')}%")
        elif progress:
            parts.append(fmt_percentage(view.progress))
            done = fmt_bytes(progress.get("downloaded_bytes"))
            parts.append(f"{done}/{fmt_bytes(progress.get('total_bytes'))}")
            if view.state == "downloading":
                parts.append(f"{progress.get('speed_mbps', 0.0):.1f} MB/s")
                parts.append(f"ETA {fmt_eta(progress.get('eta_seconds'))}")
        if view.state == "failed" and view.error:
            parts.append(f"{view.error.get('type')}: {view.error.get('message')}")
        self.console.print("  ".join(parts), highlight=False, markup=False, soft_wrap=True)


def _fit(text: str, width: int) -> str:
    text = text.replace("[", "(").replace("]", ")")
    return text if len(text) <= width else text[: width - 1] + "…"


async def follow(
    client: ProgressClient,
    view: LiveView,
    task_ids: list[str],
    *,
    everything: bool = False,
    forever: bool = False,
) -> None:
    """Feed `view` from the WebSocket until the tasks in it are finished.

    With `everything`, tasks the key creates meanwhile join the view, and the watch ends
    when nothing is pending, downloading or processing (paused tasks do not hold it open);
    with `forever` it never ends by itself.
    """
    if not forever and task_ids and view.finished(task_ids):
        return
    targets = (["*", *task_ids]) if everything else task_ids
    subscription = client.subscribe(targets, on_reconnecting=_reconnecting_note(view))
    async with subscription as events:
        async for event in events:
            task_id = event.get("task_id")
            if not task_id or task_id == "*":
                continue
            if task_id not in view.views:
                if not everything:
                    continue
                try:
                    view.add(await client.get(task_id))
                except ApiError:
                    continue  # deleted meanwhile
            task_view = view.views[task_id]
            if event.get("event") == "download.started" and not task_view.record["filename"]:
                # The origin may have just named the file; the record knows.
                try:
                    task_view.record = await client.get(task_id)
                except ApiError:
                    pass
            view.apply(event)
            if not forever and view.finished(paused_counts=everything):
                return


def _reconnecting_note(view: LiveView) -> Any:
    last = [0.0]

    def note(reason: str) -> None:
        now = time.monotonic()
        if now - last[0] > 5:
            last[0] = now
            view.note(f"connection to the server lost ({reason}); reconnecting…")

    return note
