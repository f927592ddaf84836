"""PostgresStore: the Store on PostgreSQL through asyncpg, the database of cluster mode.

Many nodes share one database, so nothing here trusts process memory: every statement is
one short transaction on a pooled connection, and every value is a `$n` parameter. The
cluster's own writes (claims, leases, fenced runner writes, commit-ordered seq) live in
`progress_server.cluster`; this module is what any node, clustered or not, needs.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import asyncpg

from progress_server.cluster.eventlog import append_event, append_guarded
from progress_server.models import Event, Task, TaskState
from progress_server.store.postgres_migrations import apply_migrations
from progress_server.store.postgres_rows import (
    DELETIONS_CHANNEL,
    ENQUEUE,
    change_assignments,
    cluster_task_from_row,
    new_task_params,
    update_task_row,
)
from progress_server.store.rows import (
    ApiKeyRow,
    DuplicateSubmission,
    FilenameTaken,
    SessionRow,
    SnapshotRow,
    TaskChange,
)
from progress_server.store.sqlite_rows import event_from_row, key_from_row, session_from_row

if TYPE_CHECKING:
    from progress_server.store.postgres_rows import Connection


class PostgresStore:
    """The Store on one PostgreSQL database, through a pool of asyncpg connections."""

    def __init__(
        self,
        url: str,
        *,
        # None kept open when idle: after a database restart the pool does not hammer it
        # to restore a floor; connections come back as they are needed.
        min_connections: int = 0,
        max_connections: int = 10,
        application_name: str = "progress-server",
    ) -> None:
        self.url = url
        # Shown in pg_stat_activity, so an operator sees which node holds which connection.
        self.application_name = application_name
        self._min_connections = min_connections
        self._max_connections = max_connections
        self._pool_or_none: asyncpg.Pool[asyncpg.Record] | None = None
        self.last_write_seconds = 0.0
        self.write_observers: list[Callable[[float], None]] = []
        # Key changes heard of (key_changed); read by key_generation.
        self._key_changes = 0

    # -- lifecycle ---------------------------------------------------------------------

    async def open(self) -> None:
        await apply_migrations(self.url)
        self._pool_or_none = await asyncpg.create_pool(
            self.url,
            min_size=self._min_connections,
            max_size=self._max_connections,
            server_settings={"application_name": self.application_name},
        )

    async def close(self) -> None:
        if self._pool_or_none is not None:
            await self._pool_or_none.close()
            self._pool_or_none = None

    @property
    def pool(self) -> asyncpg.Pool[asyncpg.Record]:
        """The connection pool, shared with the cluster's claims and event log."""
        assert self._pool_or_none is not None, "store is not open"
        return self._pool_or_none

    async def applied_migrations(self) -> list[int]:
        rows = await self.pool.fetch("SELECT version FROM schema_migrations ORDER BY version")
        return [row["version"] for row in rows]

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        """One write transaction on a pooled connection, timed for the metrics."""
        async with self.write_connection() as conn, conn.transaction():
            yield conn

    @asynccontextmanager
    async def write_connection(self) -> AsyncIterator[Connection]:
        """A pooled connection for writing, timed for the metrics. A single statement on
        it is its own transaction, which holds its locks for no network round trip."""
        async with self.pool.acquire() as conn:
            started = time.perf_counter()
            yield conn
            self.last_write_seconds = time.perf_counter() - started
            for observe in self.write_observers:
                observe(self.last_write_seconds)

    # -- keys --------------------------------------------------------------------------

    async def create_key(self, name: str, key_hash: str, is_admin: bool) -> int:
        async with self.transaction() as db:
            key_id = await db.fetchval(
                "INSERT INTO api_keys (name, key_hash, is_admin, created_at)"
                " VALUES ($1, $2, $3, $4) RETURNING key_id",
                name,
                key_hash,
                is_admin,
                time.time(),
            )
        return int(key_id)

    async def list_keys(self) -> list[ApiKeyRow]:
        rows = await self.pool.fetch("SELECT * FROM api_keys ORDER BY key_id")
        return [key_from_row(row) for row in rows]

    async def key_by_hash(self, key_hash: str) -> ApiKeyRow | None:
        row = await self.pool.fetchrow("SELECT * FROM api_keys WHERE key_hash = $1", key_hash)
        return None if row is None else key_from_row(row)

    async def revoke_key(self, name: str) -> bool:
        async with self.transaction() as db:
            revoked = await db.fetch(
                "UPDATE api_keys SET revoked_at = $1 WHERE name = $2 AND revoked_at IS NULL"
                " RETURNING key_id",
                time.time(),
                name,
            )
        return bool(revoked)

    def key_generation(self) -> int:
        """Counts the key changes this node heard of: every change to api_keys notifies
        (migration 0004's trigger), and the node's ClusterFeed, which listens, calls
        `key_changed` for each one, and once more after it reconnects (it may have missed
        some). A store no feed listens for (a `keys` command) never needs to know."""
        return self._key_changes

    def key_changed(self) -> None:
        self._key_changes += 1

    # -- page sessions -----------------------------------------------------------------

    async def insert_session(self, session: SessionRow) -> None:
        async with self.transaction() as db:
            await db.execute(
                "INSERT INTO sessions (token_hash, key_id, csrf_token, created_at, expires_at)"
                " VALUES ($1, $2, $3, $4, $5)",
                session.token_hash,
                session.key_id,
                session.csrf_token,
                session.created_at,
                session.expires_at,
            )

    async def delete_session(self, token_hash: str) -> None:
        async with self.transaction() as db:
            await db.execute("DELETE FROM sessions WHERE token_hash = $1", token_hash)

    async def session_by_hash(self, token_hash: str, now: float) -> SessionRow | None:
        """An unexpired session another node may have made (page sessions live in memory
        on the node that made them)."""
        row = await self.pool.fetchrow(
            "SELECT * FROM sessions WHERE token_hash = $1 AND expires_at > $2", token_hash, now
        )
        return None if row is None else session_from_row(row)

    async def live_session_hashes(self, token_hashes: Sequence[str], now: float) -> set[str]:
        """Which of these sessions still exist, unexpired (another node may have ended one)."""
        rows = await self.pool.fetch(
            "SELECT token_hash FROM sessions"
            " WHERE token_hash = ANY($1::text[]) AND expires_at > $2",
            list(token_hashes),
            now,
        )
        return {row["token_hash"] for row in rows}

    async def live_sessions(self, now: float) -> list[SessionRow]:
        """Unexpired sessions; expired ones are deleted on the way."""
        async with self.transaction() as db:
            await db.execute("DELETE FROM sessions WHERE expires_at <= $1", now)
            rows = await db.fetch("SELECT * FROM sessions")
        return [session_from_row(row) for row in rows]

    # -- tasks -------------------------------------------------------------------------

    async def insert_task(self, task: Task, idempotency_key: str | None, event: Event) -> Event:
        """Store a new task with its first event (its seq from the cluster's log) in one
        statement; sets `task.order`. Raises DuplicateSubmission when the owner's
        `idempotency_key` already names a task and FilenameTaken when another task has the
        task's filename (another node stored either a moment ago): nothing is stored then."""
        params = new_task_params(task, idempotency_key)
        try:
            async with self.write_connection() as db:
                stored = await append_guarded(db, ENQUEUE, params, event)
        except asyncpg.UniqueViolationError as exc:
            if exc.constraint_name == "tasks_filename":
                raise FilenameTaken(task.filename) from exc
            raise
        if stored is None:
            raise DuplicateSubmission(idempotency_key)
        task.order = stored.row["task_order"]
        return stored.event

    async def task_by_idempotency_key(
        self, owner_key_id: int, idempotency_key: str, since: float
    ) -> Task | None:
        row = await self.pool.fetchrow(
            "SELECT * FROM tasks"
            " WHERE owner_key_id = $1 AND idempotency_key = $2 AND created_at >= $3",
            owner_key_id,
            idempotency_key,
            since,
        )
        return None if row is None else cluster_task_from_row(row)

    async def clear_idempotency_key(self, owner_key_id: int, idempotency_key: str) -> None:
        """Free a key older than its window so it can name a new task."""
        async with self.transaction() as db:
            await db.execute(
                "UPDATE tasks SET idempotency_key = NULL"
                " WHERE owner_key_id = $1 AND idempotency_key = $2",
                owner_key_id,
                idempotency_key,
            )

    async def get_task(self, task_id: str) -> Task | None:
        row = await self.pool.fetchrow("SELECT * FROM tasks WHERE task_id = $1", task_id)
        return None if row is None else cluster_task_from_row(row)

    async def list_tasks(
        self,
        owner_key_id: int | None,
        states: Sequence[TaskState] = (),
        limit: int = 50,
        after_order: int = 0,
        newest_first: bool = False,
    ) -> list[Task]:
        """Tasks in submission order (or newest first); `owner_key_id` None means all."""
        # NULL parameters switch a filter off, so the statement text never varies.
        order = "task_order DESC" if newest_first else "task_order"
        rows = await self.pool.fetch(
            "SELECT * FROM tasks WHERE task_order > $1"
            " AND ($2::bigint IS NULL OR owner_key_id = $2)"
            " AND (cardinality($3::text[]) = 0 OR state = ANY($3))"
            f" ORDER BY {order} LIMIT $4",
            after_order,
            owner_key_id,
            [str(s) for s in states],
            limit,
        )
        return [cluster_task_from_row(row) for row in rows]

    async def filenames_in_use(self) -> set[str]:
        rows = await self.pool.fetch("SELECT filename FROM tasks WHERE filename IS NOT NULL")
        return {row["filename"] for row in rows}

    async def claim_filename(self, task_id: str, filename: str) -> bool:
        """Give the task this filename unless another task has it, atomically."""
        async with self.transaction() as db:
            # Two nodes may claim one name at the same moment: serialise claims of the same
            # name (a transaction-scoped lock, so nothing is left held on any error).
            await db.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", filename)
            try:
                claimed = await db.fetch(
                    "UPDATE tasks SET filename = $1, updated_at = $2 WHERE task_id = $3"
                    " AND NOT EXISTS (SELECT 1 FROM tasks WHERE filename = $1 AND task_id <> $3)"
                    " RETURNING task_id",
                    filename,
                    time.time(),
                    task_id,
                )
            except asyncpg.UniqueViolationError:
                # A new task was stored with this name meanwhile (inserts take no lock).
                return False
        return bool(claimed)

    async def update_task(self, task_id: str, change: TaskChange) -> None:
        async with self.transaction() as db:
            await update_task_row(db, task_id, change)

    async def record_transition(
        self, event: Event | None, task_id: str, change: TaskChange
    ) -> Event | None:
        """Change a task and store the event that tells of it (its seq from the cluster's
        log), in one statement; None, with nothing stored, when there is no such task."""
        if event is None:
            await self.update_task(task_id, change)
            return None
        assignments, params = change_assignments(change, first_param=2)
        guard = f"UPDATE tasks SET {assignments} WHERE task_id = $1 RETURNING task_id"
        async with self.write_connection() as db:
            stored = await append_guarded(db, guard, [task_id, *params], event)
        return None if stored is None else stored.event

    async def save_snapshots(self, snapshots: Iterable[SnapshotRow]) -> None:
        """Store running tasks' byte counts (throttled progress), in one write."""
        rows = [(s.downloaded_bytes, s.total_bytes, time.time(), s.task_id) for s in snapshots]
        if not rows:
            return
        async with self.transaction() as db:
            await db.executemany(
                "UPDATE tasks SET downloaded_bytes = $1, total_bytes = $2, updated_at = $3"
                " WHERE task_id = $4",
                rows,
            )

    async def delete_task(self, task_id: str) -> None:
        """Remove a task and its events, and tell every node (delivered at the commit)."""
        async with self.transaction() as db:
            await db.execute("DELETE FROM events WHERE task_id = $1", task_id)
            await db.execute("DELETE FROM tasks WHERE task_id = $1", task_id)
            await db.execute("SELECT pg_notify($1, $2)", DELETIONS_CHANNEL, task_id)

    # -- events ------------------------------------------------------------------------

    async def insert_event(self, event: Event) -> Event:
        """Store an event under the next seq of the cluster's log; returns it as stored."""
        async with self.write_connection() as db:
            return await append_event(db, event)

    async def events_after(
        self,
        after_seq: int,
        *,
        task_ids: Sequence[str] | None = None,
        owner_key_id: int | None = None,
        limit: int = 1000,
    ) -> list[Event]:
        """Stored events with seq > after_seq, in seq order, optionally narrowed."""
        if task_ids is not None and not task_ids:
            return []
        rows = await self.pool.fetch(
            "SELECT * FROM events WHERE seq > $1"
            " AND ($2::text[] IS NULL OR task_id = ANY($2))"
            " AND ($3::bigint IS NULL OR owner_key_id = $3)"
            " ORDER BY seq LIMIT $4",
            after_seq,
            None if task_ids is None else list(task_ids),
            owner_key_id,
            limit,
        )
        return [event_from_row(row) for row in rows]

    async def max_event_seq(self) -> int:
        return int(await self.pool.fetchval("SELECT COALESCE(MAX(seq), 0) FROM events"))

    async def seq_reserved(self) -> int:
        """The highest seq handed out so far, by a reservation or by the cluster's log."""
        return int(await self.pool.fetchval("SELECT last_seq FROM event_seq WHERE id = 1"))

    async def reserve_seq(self, upto: int) -> None:
        # GREATEST: a reservation never moves the shared counter back below a seq the
        # cluster's event log (progress_server.cluster.eventlog) has handed out.
        async with self.transaction() as db:
            await db.execute(
                "UPDATE event_seq SET last_seq = GREATEST(last_seq, $1) WHERE id = 1", upto
            )
