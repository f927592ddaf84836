"""SqliteStore: the Store on SQLite. Only the store/sqlite*.py modules import sqlite3.

The class is assembled from parts, each in its own module: the connections, migrations and
write transactions (sqlite_connections.py), keys and page sessions (sqlite_keys.py), and
here the tasks and their events. All SQL is parameterised.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Sequence
from typing import Any

from progress_server.models import Event, Task, TaskState
from progress_server.store.rows import (
    NEW_TASK_COLUMNS,
    SnapshotRow,
    TaskChange,
    new_task_params,
)
from progress_server.store.sqlite_keys import SqliteKeysAndSessions
from progress_server.store.sqlite_rows import change_columns, event_from_row, task_from_row

# Made of the column names (constants); every value goes as a parameter.
_INSERT_TASK = (
    f"INSERT INTO tasks ({', '.join(NEW_TASK_COLUMNS)})"
    f" VALUES ({', '.join('?' for _ in NEW_TASK_COLUMNS)})"
)


class SqliteStore(SqliteKeysAndSessions):
    """The Store on one SQLite file (WAL): writes group-committed on one thread, reads on
    another (sqlite_connections.py)."""

    # -- tasks -------------------------------------------------------------------------

    async def insert_task(self, task: Task, idempotency_key: str | None, event: Event) -> Event:
        """Store a new task together with its first event, in one transaction."""

        def write(db: sqlite3.Connection) -> int:
            cur = db.execute(_INSERT_TASK, new_task_params(task, idempotency_key))
            _insert_event(db, event)
            assert cur.lastrowid is not None
            return cur.lastrowid

        task.order = await self._write(write)
        return event

    async def task_by_idempotency_key(
        self, owner_key_id: int, idempotency_key: str, since: float
    ) -> Task | None:
        row = await self._row(
            "SELECT * FROM tasks"
            " WHERE owner_key_id = ? AND idempotency_key = ? AND created_at >= ?",
            (owner_key_id, idempotency_key, since),
        )
        return None if row is None else task_from_row(row)

    async def clear_idempotency_key(self, owner_key_id: int, idempotency_key: str) -> None:
        """Free a key older than its 24 h window so it can name a new task."""

        def write(db: sqlite3.Connection) -> None:
            db.execute(
                "UPDATE tasks SET idempotency_key = NULL"
                " WHERE owner_key_id = ? AND idempotency_key = ?",
                (owner_key_id, idempotency_key),
            )

        await self._write(write)

    async def get_task(self, task_id: str) -> Task | None:
        row = await self._row("SELECT * FROM tasks WHERE task_id = ?", (task_id,))
        return None if row is None else task_from_row(row)

    async def list_tasks(
        self,
        owner_key_id: int | None,
        states: Sequence[TaskState] = (),
        limit: int = 50,
        after_order: int = 0,
        newest_first: bool = False,
    ) -> list[Task]:
        where = ["task_order > ?"]
        params: list[Any] = [after_order]
        if owner_key_id is not None:
            where.append("owner_key_id = ?")
            params.append(owner_key_id)
        if states:
            where.append(f"state IN ({', '.join('?' for _ in states)})")
            params.extend(s.value for s in states)
        params.append(limit)
        order = "task_order DESC" if newest_first else "task_order"
        sql = f"SELECT * FROM tasks WHERE {' AND '.join(where)} ORDER BY {order} LIMIT ?"
        rows = await self._rows(sql, params)
        return [task_from_row(row) for row in rows]

    async def filenames_in_use(self) -> set[str]:
        rows = await self._rows("SELECT filename FROM tasks WHERE filename IS NOT NULL")
        return {row[0] for row in rows}

    async def claim_filename(self, task_id: str, filename: str) -> bool:
        def write(db: sqlite3.Connection) -> bool:
            cur = db.execute(
                "UPDATE tasks SET filename = ?, updated_at = ? WHERE task_id = ?"
                " AND NOT EXISTS (SELECT 1 FROM tasks WHERE filename = ? AND task_id != ?)",
                (filename, time.time(), task_id, filename, task_id),
            )
            return cur.rowcount > 0

        return await self._write(write)

    async def update_task(self, task_id: str, change: TaskChange) -> None:
        def write(db: sqlite3.Connection) -> None:
            _update_task(db, task_id, change)

        await self._write(write)

    async def record_transition(
        self, event: Event | None, task_id: str, change: TaskChange
    ) -> Event | None:
        def write(db: sqlite3.Connection) -> None:
            _update_task(db, task_id, change)
            if event is not None:
                _insert_event(db, event)

        await self._write(write)
        return event

    async def save_snapshots(self, snapshots: Iterable[SnapshotRow]) -> None:
        rows = [(s.downloaded_bytes, s.total_bytes, time.time(), s.task_id) for s in snapshots]
        if not rows:
            return

        def write(db: sqlite3.Connection) -> None:
            db.executemany(
                "UPDATE tasks SET downloaded_bytes = ?, total_bytes = ?, updated_at = ?"
                " WHERE task_id = ?",
                rows,
            )

        await self._write(write)

    async def delete_task(self, task_id: str) -> None:
        def write(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM events WHERE task_id = ?", (task_id,))
            db.execute("DELETE FROM tasks WHERE task_id = ?", (task_id,))

        await self._write(write)

    # -- events ------------------------------------------------------------------------

    async def insert_event(self, event: Event) -> Event:
        def write(db: sqlite3.Connection) -> None:
            _insert_event(db, event)

        await self._write(write)
        return event

    async def events_after(
        self,
        after_seq: int,
        *,
        task_ids: Sequence[str] | None = None,
        owner_key_id: int | None = None,
        limit: int = 1000,
    ) -> list[Event]:
        where = ["seq > ?"]
        params: list[Any] = [after_seq]
        if task_ids is not None:
            if not task_ids:
                return []
            where.append(f"task_id IN ({', '.join('?' for _ in task_ids)})")
            params.extend(task_ids)
        if owner_key_id is not None:
            where.append("owner_key_id = ?")
            params.append(owner_key_id)
        params.append(limit)
        sql = f"SELECT * FROM events WHERE {' AND '.join(where)} ORDER BY seq LIMIT ?"
        rows = await self._rows(sql, params)
        return [event_from_row(row) for row in rows]

    async def max_event_seq(self) -> int:
        row = await self._row("SELECT COALESCE(MAX(seq), 0) FROM events")
        return int(row[0]) if row else 0

    async def seq_reserved(self) -> int:
        row = await self._row("SELECT reserved FROM seq_reservation WHERE id = 1")
        return int(row[0]) if row else 0

    async def reserve_seq(self, upto: int) -> None:
        def write(db: sqlite3.Connection) -> None:
            db.execute("UPDATE seq_reservation SET reserved = ? WHERE id = 1", (upto,))

        await self._write(write)


def _insert_event(db: sqlite3.Connection, event: Event) -> None:
    db.execute(
        "INSERT INTO events (seq, task_id, owner_key_id, event, state, body, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            event.seq,
            event.task_id,
            event.owner_key_id,
            event.name.value,
            event.state.value,
            json.dumps(event.body),
            event.timestamp,
        ),
    )


def _update_task(db: sqlite3.Connection, task_id: str, change: TaskChange) -> None:
    values = change_columns(change)
    # Column names are TaskChange's field names, never input.
    assignments = ", ".join(f"{name} = ?" for name in values)
    db.execute(f"UPDATE tasks SET {assignments} WHERE task_id = ?", (*values.values(), task_id))
