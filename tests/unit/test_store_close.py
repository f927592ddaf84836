"""Closing the SQLite store on a real file: a write asked for while the store closes (by a
task started once an earlier write committed) is committed before the connection closes,
and a write asked for after close is refused with StoreClosed and leaves the file as it
was."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest

from progress_server.models import Event, EventName, TaskState
from progress_server.store.sqlite import SqliteStore
from progress_server.store.sqlite_threads import StoreClosed


def event(seq: int) -> Event:
    return Event(
        seq=seq,
        name=EventName.HOOK,
        task_id="task-a",
        owner_key_id=1,
        state=TaskState.COMPLETED,
        timestamp=time.time(),
        body={"n": seq},
    )


def stored_seqs(path: Path) -> list[int]:
    with sqlite3.connect(path) as db:
        return [row[0] for row in db.execute("SELECT seq FROM events ORDER BY seq")]


async def test_a_write_asked_for_while_closing_is_committed_and_one_after_is_refused(
    tmp_path: Path,
) -> None:
    path = tmp_path / "progress.db"
    store = SqliteStore(path)
    await store.open()

    async def two_writes() -> None:
        await store.insert_event(event(1))
        # Asked for by a task started once the first write committed, while close() is
        # waiting for that commit: it runs just after close() heard the writer was done.
        await asyncio.create_task(store.insert_event(event(2)))

    # Another connection holds the write lock, so the first write is still being committed
    # when close() starts waiting for the writer.
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        writes = asyncio.create_task(two_writes())
        await asyncio.sleep(0.1)
        closing = asyncio.create_task(store.close())
        await asyncio.sleep(0.3)
        assert not writes.done() and not closing.done()
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    await asyncio.wait_for(asyncio.gather(writes, closing), timeout=10)
    assert stored_seqs(path) == [1, 2]

    with pytest.raises(StoreClosed):
        await store.insert_event(event(3))
    assert stored_seqs(path) == [1, 2]
