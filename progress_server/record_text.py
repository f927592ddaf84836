"""A task record as text for people: its name, its figures, the `ls` table, the `show` page.

Figures are formatted by progress_server.display, so the terminal reads as the status page.
"""

from __future__ import annotations

from progress_server.client import TaskRecord
from progress_server.display import Figures, display_name, progress_figures, segment_bar


def record_name(record: TaskRecord) -> str:
    result = record.get("result")
    return display_name(
        record["url"], record.get("filename"), result["filename"] if result else None
    )


def record_figures(record: TaskRecord) -> Figures:
    return progress_figures(record["state"], record.get("progress"))


def task_rows(records: list[TaskRecord]) -> str:
    """An aligned table for people: short ids (any unique prefix works as an ID)."""
    header = ("ID", "STATE", "DONE", "SIZE", "SPEED", "NAME", "NOTE")
    rows = [header]
    for record in records:
        shown = record_figures(record)
        error = record.get("error")
        note = f"{error['type']}: {error['message']}" if error else ""
        rows.append(
            (
                record["task_id"][:8],
                record["state"],
                shown.percentage,
                shown.size,
                shown.speed,
                record_name(record),
                note,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    lines = []
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return "\n".join(lines)


def describe(record: TaskRecord) -> str:
    shown = record_figures(record)
    lines = [
        ("Task", record["task_id"]),
        ("URL", record["url"]),
        ("File", record["filename"] or "(not named yet)"),
        ("State", record["state"]),
    ]
    summary = f"{shown.percentage}  {shown.size}"
    if record["state"] == "downloading":
        summary += f"  {shown.speed}  ETA {shown.eta}"
    lines.append(("Progress", summary))
    total = record["progress"]["total_bytes"]
    segments = record.get("segments")
    if segments and total:
        # A split download: where each connection fetches, as aria2's front ends draw it.
        parts = f"{segment_bar(segments, total)} {len(segments)} parts"
        connections = record.get("connections")
        if connections:
            parts += f", {connections} connections open"
        lines.append(("Segments", parts))
    result = record.get("result")
    if result:
        produced = f"{result.get('filename')}, {result.get('size_mb')} MiB"
        if result.get("duration_seconds") is not None:
            produced += f", {result['duration_seconds']} s of media"
        lines.append(("Result", produced))
    error = record.get("error")
    if error:
        lines.append(("Error", f"{error.get('type')}: {error.get('message')}"))
    if record.get("sha256"):
        lines.append(("SHA-256", str(record.get("sha256"))))
    lines += [("Created", record["created_at"]), ("Updated", record["updated_at"])]
    return "\n".join(f"{label:<9} {value}" for label, value in lines)
