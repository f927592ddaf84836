"""Following tasks from a terminal: live progress bars (rich) fed by the WebSocket.

On a terminal each task gets a bar; when the output is a pipe or a file, the same events
become plain lines (a state change at once, progress at most once a second per task), so
logs of `progress-server add URL --wait` in scripts and CI stay readable.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, cast

import rich.markup
from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, TaskID, TextColumn
from rich.table import Column

from progress_server.client import (
    FINAL_STATES,
    ApiError,
    Event,
    ProgressClient,
    ProgressInfo,
    TaskError,
    TaskRecord,
)
from progress_server.display import (
    DASH,
    STATE_LABELS,
    format_eta,
    format_percentage,
    progress_figures,
)
from progress_server.record_text import record_name

# Each state's colour; its symbol is the page's (display.STATE_LABELS).
STATE_COLOURS = {
    "pending": "dim",
    "downloading": "cyan",
    "processing": "magenta",
    "completed": "green",
    "failed": "red",
    "cancelled": "yellow",
    "paused": "yellow",
}
PLAIN_PROGRESS_EVERY = 1.0
# A server that stays away this long is reported as unreachable instead of waited for.
GIVE_UP_AFTER = 300.0


@dataclass
class TaskView:
    """What the terminal knows about one task."""

    record: TaskRecord
    state: str
    progress: ProgressInfo | None
    processing: dict[str, Any] | None = None
    error: TaskError | None = None
    # The last `download.retrying` while the task waits to try again, else None.
    retrying: Event | None = None
    last_plain: float = field(default=0.0)
    # The connection dropped; figures shown are from before that.
    stale: bool = False

    @property
    def task_id(self) -> str:
        return self.record["task_id"]

    @property
    def name(self) -> str:
        return record_name(self.record)

    @property
    def step_percentage(self) -> float | None:
        """How far the processing step got, when it says."""
        value = (self.processing or {}).get("percentage")
        return value if isinstance(value, int | float) else None

    def apply(self, event: Event) -> bool:
        """Take in one event; True if the state changed."""
        before = self.state
        self.stale = False
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
        kind = event.get("event")
        if kind == "download.retrying":
            self.retrying = event
        elif kind != "subscribed" or self.state != "downloading":
            self.retrying = None
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
        self._noted_at = 0.0
        if not self.plain:
            # Rows share one table grid, so each column lines up across tasks. On a narrow
            # terminal the state shows only as its symbol, leaving the bar room to move.
            wide = console.width >= 110
            name_width = max(12, console.width // (4 if wide else 5))
            columns: list[ProgressColumn] = [
                TextColumn("{task.fields[symbol]}"),
                TextColumn(
                    "{task.description}",
                    table_column=Column(no_wrap=True, overflow="ellipsis", max_width=name_width),
                ),
            ]
            if wide:
                columns.append(
                    TextColumn("{task.fields[label]}", table_column=Column(no_wrap=True))
                )
            columns += [
                BarColumn(bar_width=None),
                TextColumn("{task.fields[pct]}", justify="right"),
                TextColumn("{task.fields[size]}", justify="right"),
                TextColumn("{task.fields[speed]}", justify="right"),
                TextColumn("{task.fields[eta]}", justify="right"),
            ]
            self._bars = Progress(
                *columns,
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
                view.name, total=None, symbol="", label="", pct="", size="", speed="", eta=""
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
            # A snapshot or a replayed `queued` that changes nothing is not news.
            quiet = ("download.progress", "subscribed", "download.queued")
            self._line(view, force=changed or event.get("event") not in quiet)

    def note(self, message: str) -> None:
        self.console.print(message, style="yellow", highlight=False)

    def disconnected(self, reason: str) -> None:
        """The socket dropped: say so (at most every few seconds) and grey out the figures
        of unfinished tasks until fresh ones arrive."""
        now = time.monotonic()
        if now - self._noted_at > 5:
            self._noted_at = now
            self.note(f"connection to the server lost ({reason}); reconnecting…")
        for view in self.views.values():
            if view.state not in FINAL_STATES and not view.stale:
                view.stale = True
                if self._bars is not None:
                    self._draw(view)

    def finished(self, ids: Iterable[str] | None = None, paused_counts: bool = False) -> bool:
        done = FINAL_STATES | ({"paused"} if paused_counts else set())
        chosen = self.views.values() if ids is None else [self.views[i] for i in ids]
        return all(view.state in done for view in chosen)

    def failures(self) -> list[TaskView]:
        return [v for v in self.views.values() if v.state in ("failed", "cancelled")]

    def _draw(self, view: TaskView) -> None:
        assert self._bars is not None
        style = STATE_COLOURS.get(view.state, "")
        symbol = STATE_LABELS.get(view.state, ("", "?"))[1]
        progress: dict[str, Any] = dict(view.progress or {})
        known_total = progress.get("total_bytes")
        done = progress.get("downloaded_bytes") or 0
        shown = progress_figures(view.state, view.progress)
        label, pct, speed, eta = view.state, shown.percentage, shown.speed, shown.eta
        bar_total, bar_done = known_total, done
        if view.processing is not None:
            label = f"processing: {view.processing.get('step') or ''}".rstrip(": ")
            step = view.step_percentage
            bar_total, bar_done = (100, step) if step is not None else (None, 0)
            pct = format_percentage(step)
            eta = format_eta(view.processing.get("eta_seconds")) if step is not None else DASH
        elif view.state == "completed":
            bar_total = bar_done = known_total or done or 1
        elif view.state != "downloading":
            # Pending or stopped: a bar of unknown length must not pulse as if working.
            bar_total = known_total or done or 1
        if view.state == "failed" and view.error:
            label = f"failed: {view.error.get('type', '')}"
        elif view.retrying is not None:
            label = f"retrying: {view.error.get('type', '') if view.error else ''}"
        if view.stale:
            label, speed, eta = "reconnecting…", DASH, DASH
        self._bars.update(
            self._bar_ids[view.task_id],
            description=f"[{style}]{_escape(view.name)}[/]",
            total=bar_total,
            completed=bar_done,
            symbol=f"[{style}]{symbol}[/]",
            label=f"[{style}]{label}[/]",
            pct=pct,
            size=shown.size,
            speed=speed,
            eta=eta,
        )

    def _line(self, view: TaskView, force: bool) -> None:
        now = time.monotonic()
        if not force and now - view.last_plain < PLAIN_PROGRESS_EVERY:
            return
        view.last_plain = now
        parts = [view.task_id[:8], view.name, view.state]
        if view.processing is not None:
            step = format_percentage(view.step_percentage)
            parts.append(f"{view.processing.get('step')} {step}")
        elif view.progress:
            shown = progress_figures(view.state, view.progress)
            parts += [shown.percentage, shown.size]
            if view.state == "downloading":
                parts += [shown.speed, f"ETA {shown.eta}"]
        if view.state == "failed" and view.error:
            parts.append(f"{view.error.get('type')}: {view.error.get('message')}")
        elif view.retrying is not None:
            parts.append(retry_note(view.retrying))
        self.console.print("  ".join(parts), highlight=False, markup=False, soft_wrap=True)


def retry_note(event: Event) -> str:
    """`retrying (attempt 2 in 1.5 s): network_error: cannot connect to …`"""
    error = event.get("error")
    reason = f"{error['type']}: {error['message']}" if error else "failed"
    attempt, delay = event.get("attempt"), event.get("retry_in_seconds")
    return f"retrying (attempt {attempt} failed, next in {delay} s): {reason}"


def _escape(text: str) -> str:
    return rich.markup.escape(text)


async def follow(
    client: ProgressClient,
    view: LiveView,
    task_ids: list[str],
    *,
    everything: bool = False,
    forever: bool = False,
) -> None:
    """Feed `view` from the WebSocket until the tasks in it are finished.

    With `everything`, the view starts with every unfinished task of the key (the `"*"`
    subscription's snapshot, so none can slip through between a listing and the
    subscription), tasks created meanwhile join it, and the watch ends when nothing is
    pending, downloading or processing (paused tasks do not hold it open). With `forever`
    it never ends by itself.
    """
    if not everything and not forever and view.finished(task_ids):
        return
    targets = ["*"] if everything else task_ids
    # Named tasks are followed from their first event, so none that happened between the
    # record being read and the subscription (a retried attempt, say) is missed.
    subscription = client.subscribe(
        targets,
        after_seq=None if everything else 0,
        give_up_after=GIVE_UP_AFTER,
        on_reconnecting=view.disconnected,
    )
    async with subscription as events:
        async for event in events:
            if event.get("event") == "subscribed" and event.get("task_id") == "*":
                for snapshot in event.get("tasks", []):
                    await _take(client, view, cast(Event, snapshot), everything)
            else:
                await _take(client, view, event, everything)
            if not forever and view.finished(paused_counts=everything):
                return


async def _take(client: ProgressClient, view: LiveView, event: Event, add_new: bool) -> None:
    task_id = event.get("task_id")
    if not task_id:
        return
    if task_id not in view.views:
        if not add_new:
            return
        try:
            view.add(await client.get(task_id))
        except ApiError:
            return  # deleted meanwhile
    task_view = view.views[task_id]
    if event.get("event") == "download.started":
        # The origin may have just named the file; the record knows.
        with contextlib.suppress(ApiError):
            task_view.record = await client.get(task_id)
    view.apply(event)
