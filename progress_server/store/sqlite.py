"""SqliteStore: the Store on SQLite; the only module that imports aiosqlite.

One writer connection (every write goes through it, serialised by a lock so that a
transaction is never interleaved with another coroutine's statements) and one reader
connection, which WAL mode lets run beside the writer. All SQL is parameterised.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite

from progress_server.models import Event, Task, TaskState
from progress_server.resources import migrations_dir
from progress_server.store.rows import ApiKeyRow, SessionRow, SnapshotRow, TaskChange
from progress_server.store.sqlite_rows import (
    change_columns,
    event_from_row,
    key_from_row,
    session_from_row,
    task_from_row,
)


class SqliteStore:
    """The Store on one SQLite file (WAL): one writer connection, one reader."""

    def __init__(self, path: Path, migrations: Path | None = None) -> None:
        self.path = path
        self._migrations = migrations or migrations_dir()
        self._writer_conn: aiosqlite.Connection | None = None
        self._reader_conn: aiosqlite.Connection | None = None
        self._write_lock = asyncio.Lock()
        # Seconds spent in the last write transactions; read by metrics.
        self.last_write_seconds = 0.0
        # Called with each write transaction's duration (the metrics histogram).
        self.write_observers: list[Callable[[float], None]] = []

    # -- lifecycle ---------------------------------------------------------------------

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer_conn = await self._connect()
        await self._apply_migrations(self._writer_conn)
        self._reader_conn = await self._connect()

    async def _connect(self) -> aiosqlite.Connection:
        conn = await aiosqlite.connect(self.path, isolation_level=None)
        conn.row_factory = aiosqlite.Row
        await conn.execute("PRAGMA journal_mode=WAL")
        # FULL: a committed lifecycle event survives a power cut, not only a killed process.
        await conn.execute("PRAGMA synchronous=FULL")
        await conn.execute("PRAGMA foreign_keys=ON")
        await conn.execute("PRAGMA busy_timeout=5000")
        return conn

    async def close(self) -> None:
        for conn in (self._reader_conn, self._writer_conn):
            if conn is not None:
                await conn.close()
        self._reader_conn = self._writer_conn = None

    @property
    def _writer(self) -> aiosqlite.Connection:
        assert self._writer_conn is not None, "store is not open"
        return self._writer_conn

    @property
    def _reader(self) -> aiosqlite.Connection:
        assert self._reader_conn is not None, "store is not open"
        return self._reader_conn

    async def _apply_migrations(self, conn: aiosqlite.Connection) -> None:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
        )
        async with conn.execute("SELECT version FROM schema_migrations") as cur:
            applied = {row[0] for row in await cur.fetchall()}
        for path in sorted(self._migrations.glob("*.sql")):
            version = int(path.name.split("_", 1)[0])
            if version in applied:
                continue
            # One script and its bookkeeping row, one transaction: a migration is applied
            # whole or not at all. executescript takes no parameters, so the script opens
            # the transaction and the bookkeeping INSERT runs parameterised inside it.
            try:
                await conn.executescript("BEGIN;\n" + path.read_text())
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                    (version, path.name, time.time()),
                )
                await conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    await conn.execute("ROLLBACK")
                raise

    async def applied_migrations(self) -> list[int]:
        async with self._reader.execute(
            "SELECT version FROM schema_migrations ORDER BY version"
        ) as cur:
            return [row[0] for row in await cur.fetchall()]

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._write_lock:
            started = time.perf_counter()
            try:
                await self._writer.execute("BEGIN IMMEDIATE")
            except asyncio.CancelledError:
                # aiosqlite still runs BEGIN in its thread after we stop waiting for it;
                # left open, it would make the next writer fail "within a transaction".
                with contextlib.suppress(aiosqlite.Error):
                    await self._writer.execute("ROLLBACK")
                raise
            try:
                yield self._writer
            except BaseException:
                await self._writer.execute("ROLLBACK")
                raise
            await self._writer.execute("COMMIT")
            self.last_write_seconds = time.perf_counter() - started
            for observe in self.write_observers:
                observe(self.last_write_seconds)

    # -- keys --------------------------------------------------------------------------

    async def create_key(self, name: str, key_hash: str, is_admin: bool) -> int:
        async with self._transaction() as db:
            cur = await db.execute(
                "INSERT INTO api_keys (name, key_hash, is_admin, created_at) VALUES (?, ?, ?, ?)",
                (name, key_hash, int(is_admin), time.time()),
            )
            assert cur.lastrowid is not None
            return cur.lastrowid

    async def list_keys(self) -> list[ApiKeyRow]:
        async with self._reader.execute("SELECT * FROM api_keys ORDER BY key_id") as cur:
            return [key_from_row(row) for row in await cur.fetchall()]

    async def key_by_hash(self, key_hash: str) -> ApiKeyRow | None:
        async with self._reader.execute(
            "SELECT * FROM api_keys WHERE key_hash = ?", (key_hash,)
        ) as cur:
            row = await cur.fetchone()
        return None if row is None else key_from_row(row)

    async def revoke_key(self, name: str) -> bool:
        async with self._transaction() as db:
            cur = await db.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL",
                (time.time(), name),
            )
            return cur.rowcount > 0

    # -- page sessions -----------------------------------------------------------------

    async def insert_session(self, session: SessionRow) -> None:
        async with self._transaction() as db:
            await db.execute(
                "INSERT INTO sessions (token_hash, key_id, csrf_token, created_at, expires_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (
                    session.token_hash,
                    session.key_id,
                    session.csrf_token,
                    session.created_at,
                    session.expires_at,
                ),
            )

    async def delete_session(self, token_hash: str) -> None:
        async with self._transaction() as db:
            await db.execute("DELETE FROM sessions WHERE token_hash = ?", (token_hash,))

    async def live_sessions(self, now: float) -> list[SessionRow]:
        """Unexpired sessions; expired ones are deleted on the way."""
        async with self._transaction() as db:
            await db.execute("DELETE FROM sessions WHERE expires_at <= ?", (now,))
        async with self._reader.execute("SELECT * FROM sessions") as cur:
            return [session_from_row(row) for row in await cur.fetchall()]

    # -- tasks -------------------------------------------------------------------------

    async def insert_task(self, task: Task, idempotency_key: str | None, event: Event) -> Event:
        """Store a new task together with its first event, in one transaction."""
        async with self._transaction() as db:
            cur = await db.execute(
                "INSERT INTO tasks (task_id, owner_key_id, url, filename, requested_filename,"
                " sha256, state, options, idempotency_key, created_at, updated_at,"
                " source, parent_id, playlist_index)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    task.task_id,
                    task.owner_key_id,
                    task.url,
                    task.filename,
                    task.requested_filename,
                    task.sha256,
                    task.state.value,
                    json.dumps(task.options),
                    idempotency_key,
                    task.created_at,
                    task.updated_at,
                    task.source,
                    task.parent_id,
                    task.playlist_index,
                ),
            )
            assert cur.lastrowid is not None
            task.order = cur.lastrowid
            await _insert_event(db, event)
        return event

    async def task_by_idempotency_key(
        self, owner_key_id: int, idempotency_key: str, since: float
    ) -> Task | None:
        async with self._reader.execute(
            "SELECT * FROM tasks"
            " WHERE owner_key_id = ? AND idempotency_key = ? AND created_at >= ?",
            (owner_key_id, idempotency_key, since),
        ) as cur:
            row = await cur.fetchone()
        return None if row is None else task_from_row(row)

    async def clear_idempotency_key(self, owner_key_id: int, idempotency_key: str) -> None:
        """Free a key older than its 24 h window so it can name a new task."""
        async with self._transaction() as db:
            await db.execute(
                "UPDATE tasks SET idempotency_key = NULL"
                " WHERE owner_key_id = ? AND idempotency_key = ?",
                (owner_key_id, idempotency_key),
            )

    async def get_task(self, task_id: str) -> Task | None:
        async with self._reader.execute("SELECT * FROM tasks WHERE task_id = ?", (task_id,)) as cur:
            row = await cur.fetchone()
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
        async with self._reader.execute(sql, params) as cur:
            return [task_from_row(row) for row in await cur.fetchall()]

    async def filenames_in_use(self) -> set[str]:
        async with self._reader.execute(
            "SELECT filename FROM tasks WHERE filename IS NOT NULL"
        ) as cur:
            return {row[0] for row in await cur.fetchall()}

    async def claim_filename(self, task_id: str, filename: str) -> bool:
        async with self._transaction() as db:
            cur = await db.execute(
                "UPDATE tasks SET filename = ?, updated_at = ? WHERE task_id = ?"
                " AND NOT EXISTS (SELECT 1 FROM tasks WHERE filename = ? AND task_id != ?)",
                (filename, time.time(), task_id, filename, task_id),
            )
            return cur.rowcount > 0

    async def update_task(self, task_id: str, change: TaskChange) -> None:
        async with self._transaction() as db:
            await _update_task(db, task_id, change)

    async def record_transition(
        self, event: Event | None, task_id: str, change: TaskChange
    ) -> Event | None:
        async with self._transaction() as db:
            await _update_task(db, task_id, change)
            if event is not None:
                await _insert_event(db, event)
        return event

    async def save_snapshots(self, snapshots: Iterable[SnapshotRow]) -> None:
        rows = [(s.downloaded_bytes, s.total_bytes, time.time(), s.task_id) for s in snapshots]
        if not rows:
            return
        async with self._transaction() as db:
            await db.executemany(
                "UPDATE tasks SET downloaded_bytes = ?, total_bytes = ?, updated_at = ?"
                " WHERE task_id = ?",
                rows,
            )

    async def delete_task(self, task_id: str) -> None:
        async with self._transaction() as db:
            await db.execute("DELETE FROM events WHERE task_id = ?", (task_id,))
            await db.execute("DELETE FROM tasks WHERE task_id = ?", (task_id,))

    # -- events ------------------------------------------------------------------------

    async def insert_event(self, event: Event) -> Event:
        async with self._transaction() as db:
            await _insert_event(db, event)
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
        async with self._reader.execute(sql, params) as cur:
            return [event_from_row(row) for row in await cur.fetchall()]

    async def max_event_seq(self) -> int:
        async with self._reader.execute("SELECT COALESCE(MAX(seq), 0) FROM events") as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def seq_reserved(self) -> int:
        async with self._reader.execute("SELECT reserved FROM seq_reservation WHERE id = 1") as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def reserve_seq(self, upto: int) -> None:
        async with self._transaction() as db:
            await db.execute("UPDATE seq_reservation SET reserved = ? WHERE id = 1", (upto,))


async def _insert_event(db: aiosqlite.Connection, event: Event) -> None:
    await db.execute(
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


async def _update_task(db: aiosqlite.Connection, task_id: str, change: TaskChange) -> None:
    values = change_columns(change)
    # Column names are TaskChange's field names, never input.
    assignments = ", ".join(f"{name} = ?" for name in values)
    await db.execute(
        f"UPDATE tasks SET {assignments} WHERE task_id = ?", (*values.values(), task_id)
    )
