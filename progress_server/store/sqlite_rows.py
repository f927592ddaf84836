"""Rows between SQLite and the store's types: decoding what is read, encoding a change.

PostgresStore decodes with the same functions: its tables have the same columns, json
columns read back as text, and an asyncpg Record is read by column name as sqlite3.Row is.
"""

from __future__ import annotations

import json
import time
from typing import Any, Protocol

from progress_server.models import Event, EventName, Task, TaskState
from progress_server.store.rows import ApiKeyRow, SessionRow, TaskChange


class ColumnRow(Protocol):
    """A row read by column name: sqlite3.Row and asyncpg's Record both are one."""

    def __getitem__(self, key: str, /) -> Any: ...


# Stored as JSON text.
_JSON_COLUMNS = frozenset({"result", "error", "entries"})


def change_columns(change: TaskChange) -> dict[str, object]:
    """The columns a change sets, with values as the database stores them."""
    values = change.columns()
    values.setdefault("updated_at", time.time())
    for name in _JSON_COLUMNS & set(values):
        if values[name] is not None:
            values[name] = json.dumps(values[name])
    if isinstance(values.get("state"), TaskState):
        values["state"] = str(values["state"])
    return values


def session_from_row(row: ColumnRow) -> SessionRow:
    return SessionRow(
        row["token_hash"], row["key_id"], row["csrf_token"], row["created_at"], row["expires_at"]
    )


def key_from_row(row: ColumnRow) -> ApiKeyRow:
    return ApiKeyRow(
        key_id=row["key_id"],
        name=row["name"],
        key_hash=row["key_hash"],
        is_admin=bool(row["is_admin"]),
        created_at=row["created_at"],
        revoked_at=row["revoked_at"],
    )


def task_from_row(row: ColumnRow) -> Task:
    return Task(
        task_id=row["task_id"],
        owner_key_id=row["owner_key_id"],
        url=row["url"],
        filename=row["filename"],
        state=TaskState(row["state"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        sha256=row["sha256"],
        requested_filename=row["requested_filename"],
        downloaded_bytes=row["downloaded_bytes"],
        total_bytes=row["total_bytes"],
        result=json.loads(row["result"]) if row["result"] else None,
        error=json.loads(row["error"]) if row["error"] else None,
        options=json.loads(row["options"]) if row["options"] else {},
        etag=row["etag"],
        last_modified=row["last_modified"],
        attempts=row["attempts"],
        order=row["task_order"],
        request_hash=row["request_hash"],
        source=row["source"],
        parent_id=row["parent_id"],
        playlist_index=row["playlist_index"],
        entries=json.loads(row["entries"]) if row["entries"] is not None else None,
    )


def event_from_row(row: ColumnRow) -> Event:
    return Event(
        seq=row["seq"],
        name=EventName(row["event"]),
        task_id=row["task_id"],
        owner_key_id=row["owner_key_id"],
        state=TaskState(row["state"]),
        timestamp=row["created_at"],
        body=json.loads(row["body"]),
    )
