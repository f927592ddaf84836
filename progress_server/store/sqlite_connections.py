"""SqliteConnections: the SQLite file's connections, its migrations and its writes, on which
SqliteStore's parts (progress_server/store/sqlite.py) build.

Every write is a small function of the connection, group-committed by GroupCommitWriter
(sqlite_threads.py): its caller resumes only once it is durable, and it shares its
transaction and fsync with whatever other writes were ready at the same moment. Each read
is one trip to SqliteReader's thread, whose connection WAL mode lets run beside the writer.
A plain sqlite3 connection only watches for key changes (sqlite_keywatch.py).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from progress_server.resources import migrations_dir
from progress_server.store.sqlite_keywatch import KeyGenerationWatch
from progress_server.store.sqlite_threads import GroupCommitWriter, SqliteReader, T


class SqliteConnections:
    """One SQLite file (WAL): a group-committing writer thread and a reader thread."""

    def __init__(self, path: Path, migrations: Path | None = None) -> None:
        self.path = path
        self._migrations = migrations or migrations_dir()
        self._writer = GroupCommitWriter(path, self._migrations, self._committed)
        self._reader = SqliteReader(path)
        self._key_watch = KeyGenerationWatch(path)
        # Seconds from the last write's request to its commit; read by metrics.
        self.last_write_seconds = 0.0
        # Called with that figure for every write (the metrics histogram).
        self.write_observers: list[Callable[[float], None]] = []

    # -- lifecycle ---------------------------------------------------------------------

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        await self._writer.open()  # applies the migrations
        try:
            await self._reader.open()
            self._key_watch.open()
        except BaseException:
            await self._reader.close()
            await self._writer.close()
            raise

    async def close(self) -> None:
        self._key_watch.close()
        await self._reader.close()
        await self._writer.close()  # what was queued is written first

    async def applied_migrations(self) -> list[int]:
        rows = await self._rows("SELECT version FROM schema_migrations ORDER BY version")
        return [row[0] for row in rows]

    # -- reads and writes --------------------------------------------------------------

    async def _write(self, op: Callable[[sqlite3.Connection], T]) -> T:
        """Run `op` in the next group commit; returns once it is durable."""
        return await self._writer.write(op)

    async def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        return await self._reader.rows(sql, params)

    async def _row(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Row | None:
        rows = await self._reader.rows(sql, params)
        return rows[0] if rows else None

    def _committed(self, seconds: float) -> None:
        self.last_write_seconds = seconds
        for observe in self.write_observers:
            observe(seconds)
