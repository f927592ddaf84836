"""The two threads SQLite runs on: GroupCommitWriter (every write, group-committed) and
SqliteReader (every read, one trip to its thread each).

A write is a small function of the connection, queued. One writer thread runs everything
queued so far in one transaction (each write in a savepoint of its own, so a failing write
undoes only itself) and commits it with one fsync; only then does each caller hear that
its write is done, so "durable before anyone hears it" holds for every write. Writes that
arrive while a batch commits form the next batch: an idle server commits a lone write at
once, a busy one shares each commit and each thread hop among every task's lifecycle
events of the moment instead of queueing them one transaction at a time.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
# One write: runs on the writer thread inside the batch's transaction.
WriteOp = Callable[[sqlite3.Connection], Any]

PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    # FULL: a committed lifecycle event survives a power cut, not only a killed process.
    "PRAGMA synchronous=FULL",
    "PRAGMA foreign_keys=ON",
    "PRAGMA busy_timeout=5000",
)


class _SqliteThread:
    """One connection, used on one thread of its own and closed there."""

    def __init__(self, path: Path, thread_name: str) -> None:
        self.path = path
        self._thread_name = thread_name
        self._thread: ThreadPoolExecutor | None = None
        # Used on that thread only.
        self._db: sqlite3.Connection | None = None

    async def open(self) -> None:
        """Connect on the thread (and prepare the connection there)."""
        self._thread = ThreadPoolExecutor(1, thread_name_prefix=self._thread_name)
        try:
            await asyncio.get_running_loop().run_in_executor(self._thread, self._open_sync)
        except BaseException:
            self._thread.shutdown(wait=False)
            self._thread = None
            raise

    def _open_sync(self) -> None:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.row_factory = sqlite3.Row
        try:
            for pragma in PRAGMAS:
                db.execute(pragma)
            self._prepare(db)
        except BaseException:
            db.close()
            raise
        self._db = db

    def _prepare(self, db: sqlite3.Connection) -> None:
        """What the connection does once, on its thread, before its first use."""

    async def close(self) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            await asyncio.get_running_loop().run_in_executor(thread, self._close_sync)
            thread.shutdown(wait=False)

    def _close_sync(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


class StoreClosed(RuntimeError):
    """A write asked for once the store began closing its connection: it was not made."""


class GroupCommitWriter(_SqliteThread):
    def __init__(self, path: Path, migrations: Path, committed: Callable[[float], None]) -> None:
        super().__init__(path, "sqlite-writer")
        self._migrations = migrations
        # Told, for each write, the seconds from its request to its commit.
        self._committed = committed
        # (write, its caller's future, when it was asked for)
        self._queued: list[tuple[WriteOp, asyncio.Future[Any], float]] = []
        self._flusher: asyncio.Task[None] | None = None
        # Set once close() has written everything queued: later writes are refused.
        self._closing = False

    async def open(self) -> None:
        self._closing = False
        await super().open()

    async def close(self) -> None:
        """Write what is queued, and whatever is asked for meanwhile; refuse any write
        after that, then close."""
        # A caller woken by its commit may ask for another write before this resumes: it
        # joins the queue and gets a flusher of its own, so wait until none is left.
        while self._flusher is not None or self._queued:
            if self._flusher is None:  # a flusher cancelled with writes still queued
                self._flusher = asyncio.create_task(self._flush(), name="sqlite-group-commit")
            await asyncio.wait([self._flusher])
        self._closing = True
        await super().close()

    def _prepare(self, db: sqlite3.Connection) -> None:
        # On opening, before any write: the migrations not applied yet.
        self._apply_migrations(db)

    def _apply_migrations(self, db: sqlite3.Connection) -> None:
        db.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
        )
        applied = {row[0] for row in db.execute("SELECT version FROM schema_migrations")}
        for path in sorted(self._migrations.glob("*.sql")):
            version = int(path.name.split("_", 1)[0])
            if version in applied:
                continue
            # One script and its bookkeeping row, one transaction: a migration is applied
            # whole or not at all. executescript takes no parameters, so the script opens
            # the transaction and the bookkeeping INSERT runs parameterised inside it.
            try:
                db.executescript("BEGIN;\n" + path.read_text())
                db.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                    (version, path.name, time.time()),
                )
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise

    async def write(self, op: Callable[[sqlite3.Connection], T]) -> T:
        """Run `op` in the next group commit; returns once it is durable. A caller
        cancelled before its batch starts writes nothing. Raises StoreClosed once the
        store is closing its connection."""
        if self._closing:
            raise StoreClosed("the store is closed: the write was not made")
        assert self._thread is not None, "store is not open"
        done: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queued.append((op, done, time.perf_counter()))
        if self._flusher is None:
            # Started on the next turn of the loop, so writes queued in this one join.
            self._flusher = asyncio.create_task(self._flush(), name="sqlite-group-commit")
        return await done

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._queued:
                batch = [queued for queued in self._queued if not queued[1].cancelled()]
                self._queued = []
                if not batch:
                    continue
                job = loop.run_in_executor(self._thread, self._commit, [op for op, _, _ in batch])
                try:
                    outcomes = await asyncio.shield(job)
                except BaseException as exc:  # the COMMIT failed: nothing of it holds
                    for _, done, _ in batch:
                        if not done.done():
                            done.set_exception(exc)
                    if isinstance(exc, asyncio.CancelledError):
                        raise
                    continue
                committed_at = time.perf_counter()
                for (_, done, asked_at), (value, error) in zip(batch, outcomes, strict=True):
                    self._committed(committed_at - asked_at)
                    if done.done():
                        continue
                    if error is not None:
                        done.set_exception(error)
                    else:
                        done.set_result(value)
        finally:
            self._flusher = None

    def _commit(self, ops: list[WriteOp]) -> list[tuple[Any, Exception | None]]:
        """One transaction for every op, each in its own savepoint; one COMMIT."""
        db = self._db
        assert db is not None, "store is not open"
        outcomes: list[tuple[Any, Exception | None]] = []
        db.execute("BEGIN IMMEDIATE")
        try:
            for op in ops:
                db.execute("SAVEPOINT write")
                try:
                    value = op(db)
                except Exception as exc:
                    db.execute("ROLLBACK TO write")
                    db.execute("RELEASE write")
                    outcomes.append((None, exc))
                else:
                    db.execute("RELEASE write")
                    outcomes.append((value, None))
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        return outcomes


class SqliteReader(_SqliteThread):
    """Reads on a thread of their own: each query and its rows in one trip there."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, "sqlite-reader")

    async def rows(self, sql: str, params: Sequence[Any]) -> list[sqlite3.Row]:
        assert self._thread is not None, "store is not open"
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, self._rows_sync, sql, params)

    def _rows_sync(self, sql: str, params: Sequence[Any]) -> list[sqlite3.Row]:
        assert self._db is not None, "store is not open"
        return self._db.execute(sql, params).fetchall()
