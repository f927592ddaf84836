"""SQLite: the only module that imports aiosqlite.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite

from progress_server.models import Event, EventName, Task, TaskState
from progress_server.resources import migrations_dir

# Columns a caller may change through update_task; anything else is a programming error.
_TASK_COLUMNS = frozenset(
    {
        "filename",
        "state",
        "downloaded_bytes",
        "total_bytes",
        "result",
        "error",
        "options",
        "etag",
        "last_modified",
        "attempts",
        "updated_at",
    }
)
_JSON_COLUMNS = frozenset({"result", "error", "options"})


@dataclass(frozen=True)
class ApiKeyRow:
    key_id: int
    name: str
    key_hash: str
    is_admin: bool
    created_at: float
    revoked_at: float | None


@dataclass(frozen=True)
class SessionRow:
    token_hash: str
    key_id: int
    csrf_token: str
    created_at: float
    expires_at: float


@dataclass(frozen=True)
class SnapshotRow:
    task_id: str
    downloaded_bytes: int
    total_bytes: int | None


class Store:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._write_lock = asyncio.Lock()
        # Seconds spent in the last write transactions; read by metrics.
        self.last_write_seconds = 0.0
        # Called with each write transaction's duration (the metrics histogram).
        self.write_observers: list[Callable[[float], None]] = []

    # -- lifecycle ---------------------------------------------------------------------

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = await self._connect()
        await self._apply_migrations(self._writer)
        self._reader = await self._connect()

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
        for conn in (self._reader, self._writer):
            if conn is not None:
                await conn.close()
        self._reader = self._writer = None

    @property
    def writer(self) -> aiosqlite.Connection:
        assert self._writer is not None, "store is not open"
        return self._writer

    @property
    def reader(self) -> aiosqlite.Connection:
        assert self._reader is not None, "store is not open"
        return self._reader

    async def _apply_migrations(self, conn: aiosqlite.Connection) -> None:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
        )
        async with conn.execute("SELECT version FROM schema_migrations") as cur:
            applied = {row[0] for row in await cur.fetchall()}
        for path in sorted(migrations_dir().glob("*.sql")):
            version = int(path.name.split("_", 1)[0])
            if version in applied:
                continue
            # One script, one transaction: a migration is applied whole or not at all.
            script = path.read_text()
            await conn.executescript(
                "BEGIN;\n" + script + "\nINSERT INTO schema_migrations (version, name, applied_at)"
                f" VALUES ({version}, '{path.name}', {time.time()});\nCOMMIT;"
            )

    async def applied_migrations(self) -> list[int]:
        async with self.reader.execute(
            "SELECT version FROM schema_migrations ORDER BY version"
        ) as cur:
            return [row[0] for row in await cur.fetchall()]

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._write_lock:
            started = time.perf_counter()
            try:
                await self.writer.execute("BEGIN IMMEDIATE")
            except asyncio.CancelledError:
                # aiosqlite still runs BEGIN in its thread after we stop waiting for it;
                # left open, it would make the next writer fail "within a transaction".
                with contextlib.suppress(aiosqlite.Error):
                    await self.writer.execute("ROLLBACK")
                raise
            try:
                yield self.writer
            except BaseException:
                await self.writer.execute("ROLLBACK")
                raise
            await self.writer.execute("COMMIT")
            self.last_write_seconds = time.perf_counter() - started
            for observe in self.write_observers:
                observe(self.last_write_seconds)

    # -- keys --------------------------------------------------------------------------

    async def create_key(self, name: str, key_hash: str, is_admin: bool) -> int:
        async with self.transaction() as db:
            cur = await db.execute(
                "INSERT INTO api_keys (name, key_hash, is_admin, created_at) VALUES (?, ?, ?, ?)",
                (name, key_hash, int(is_admin), time.time()),
            )
            assert cur.lastrowid is not None
            return cur.lastrowid

    async def list_keys(self) -> list[ApiKeyRow]:
        async with self.reader.execute("SELECT * FROM api_keys ORDER BY key_id") as cur:
            return [_key_row(row) for row in await cur.fetchall()]

    async def key_by_hash(self, key_hash: str) -> ApiKeyRow | None:
        async with self.reader.execute(
            "SELECT * FROM api_keys WHERE key_hash = ?", (key_hash,)
        ) as cur:
            row = await cur.fetchone()
        return None if row is None else _key_row(row)

    async def revoke_key(self, name: str) -> bool:
        async with self.transaction() as db:
            cur = await db.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL",
                (time.time(), name),
            )
            return cur.rowcount > 0

    # -- page sessions -----------------------------------------------------------------

    async def insert_session(self, session: SessionRow) -> None:
        async with self.transaction() as db:
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
        async with self.transaction() as db:
            await db.execute("DELETE FROM sessions WHERE token_hash = ?", (token_hash,))

    async def live_sessions(self, now: float) -> list[SessionRow]:
        """Unexpired sessions; expired ones are deleted on the way."""
        async with self.transaction() as db:
            await db.execute("DELETE FROM sessions WHERE expires_at <= ?", (now,))
        async with self.reader.execute("SELECT * FROM sessions") as cur:
            return [
                SessionRow(
                    row["token_hash"],
                    row["key_id"],
                    row["csrf_token"],
                    row["created_at"],
                    row["expires_at"],
                )
                for row in await cur.fetchall()
            ]

    # -- tasks -------------------------------------------------------------------------

    async def insert_task(self, task: Task, idempotency_key: str | None, event: Event) -> Task:
        """Store a new task together with its first event, in one transaction."""
        async with self.transaction() as db:
            cur = await db.execute(
                "INSERT INTO tasks (task_id, owner_key_id, url, filename, requested_filename,"
                " sha256, state, options, idempotency_key, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
                ),
            )
            assert cur.lastrowid is not None
            task.order = cur.lastrowid
            await _insert_event(db, event)
        return task

    async def task_by_idempotency_key(
        self, owner_key_id: int, idempotency_key: str, since: float
    ) -> Task | None:
        async with self.reader.execute(
            "SELECT * FROM tasks"
            " WHERE owner_key_id = ? AND idempotency_key = ? AND created_at >= ?",
            (owner_key_id, idempotency_key, since),
        ) as cur:
            row = await cur.fetchone()
        return None if row is None else _task_row(row)

    async def clear_idempotency_key(self, owner_key_id: int, idempotency_key: str) -> None:
        """Free a key older than its 24 h window so it can name a new task."""
        async with self.transaction() as db:
            await db.execute(
                "UPDATE tasks SET idempotency_key = NULL"
                " WHERE owner_key_id = ? AND idempotency_key = ?",
                (owner_key_id, idempotency_key),
            )

    async def get_task(self, task_id: str) -> Task | None:
        async with self.reader.execute("SELECT * FROM tasks WHERE task_id = ?", (task_id,)) as cur:
            row = await cur.fetchone()
        return None if row is None else _task_row(row)

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
        async with self.reader.execute(sql, params) as cur:
            return [_task_row(row) for row in await cur.fetchall()]

    async def filenames_in_use(self) -> set[str]:
        async with self.reader.execute(
            "SELECT filename FROM tasks WHERE filename IS NOT NULL"
        ) as cur:
            return {row[0] for row in await cur.fetchall()}

    async def update_task(self, task_id: str, **fields: Any) -> None:
        async with self.transaction() as db:
            await _update_task(db, task_id, fields)

    async def record_transition(
        self, event: Event | None, task_id: str, fields: dict[str, Any]
    ) -> None:
        """Change a task and store the event that tells of it, atomically."""
        async with self.transaction() as db:
            if fields:
                await _update_task(db, task_id, fields)
            if event is not None:
                await _insert_event(db, event)

    async def save_snapshots(self, snapshots: Iterable[SnapshotRow]) -> None:
        rows = [(s.downloaded_bytes, s.total_bytes, time.time(), s.task_id) for s in snapshots]
        if not rows:
            return
        async with self.transaction() as db:
            await db.executemany(
                "UPDATE tasks SET downloaded_bytes = ?, total_bytes = ?, updated_at = ?"
                " WHERE task_id = ?",
                rows,
            )

    async def delete_task(self, task_id: str) -> None:
        async with self.transaction() as db:
            await db.execute("DELETE FROM events WHERE task_id = ?", (task_id,))
            await db.execute("DELETE FROM tasks WHERE task_id = ?", (task_id,))

    # -- events ------------------------------------------------------------------------

    async def insert_event(self, event: Event) -> None:
        async with self.transaction() as db:
            await _insert_event(db, event)

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
        async with self.reader.execute(sql, params) as cur:
            return [_event_row(row) for row in await cur.fetchall()]

    async def max_event_seq(self) -> int:
        async with self.reader.execute("SELECT COALESCE(MAX(seq), 0) FROM events") as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def seq_reserved(self) -> int:
        async with self.reader.execute("SELECT reserved FROM seq_reservation WHERE id = 1") as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def reserve_seq(self, upto: int) -> None:
        async with self.transaction() as db:
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


async def _update_task(db: aiosqlite.Connection, task_id: str, fields: dict[str, Any]) -> None:
    unknown = set(fields) - _TASK_COLUMNS
    if unknown:
        raise ValueError(f"not task columns: {sorted(unknown)}")
    values = dict(fields)
    values.setdefault("updated_at", time.time())
    for name in _JSON_COLUMNS & set(values):
        if values[name] is not None:
            values[name] = json.dumps(values[name])
    if isinstance(values.get("state"), TaskState):
        values["state"] = values["state"].value
    # Column names come from the _TASK_COLUMNS whitelist above, never from input.
    assignments = ", ".join(f"{name} = ?" for name in values)
    await db.execute(
        f"UPDATE tasks SET {assignments} WHERE task_id = ?", (*values.values(), task_id)
    )


def _key_row(row: aiosqlite.Row) -> ApiKeyRow:
    return ApiKeyRow(
        key_id=row["key_id"],
        name=row["name"],
        key_hash=row["key_hash"],
        is_admin=bool(row["is_admin"]),
        created_at=row["created_at"],
        revoked_at=row["revoked_at"],
    )


def _task_row(row: aiosqlite.Row) -> Task:
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
    )


def _event_row(row: aiosqlite.Row) -> Event:
    return Event(
        seq=row["seq"],
        name=EventName(row["event"]),
        task_id=row["task_id"],
        owner_key_id=row["owner_key_id"],
        state=TaskState(row["state"]),
        timestamp=row["created_at"],
        body=json.loads(row["body"]),
    )
