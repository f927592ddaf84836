"""SqliteConnections: the SQLite file's connections, its migrations and its write
transactions, on which SqliteStore's parts (progress_server/store/sqlite.py) build.

One writer connection (every write goes through it, serialised by a lock so that a
transaction is never interleaved with another coroutine's statements) and one reader
connection, which WAL mode lets run beside the writer; and a plain sqlite3 connection that
only watches for key changes (sqlite_keywatch.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import aiosqlite

from progress_server.resources import migrations_dir
from progress_server.store.sqlite_keywatch import KeyGenerationWatch


class SqliteConnections:
    """One SQLite file (WAL): one writer connection, one reader."""

    def __init__(self, path: Path, migrations: Path | None = None) -> None:
        self.path = path
        self._migrations = migrations or migrations_dir()
        self._writer_conn: aiosqlite.Connection | None = None
        self._reader_conn: aiosqlite.Connection | None = None
        self._key_watch = KeyGenerationWatch(path)
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
        self._key_watch.open()

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
        self._key_watch.close()
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
