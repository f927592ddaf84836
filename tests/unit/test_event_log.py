"""The EventBus's local log over a real SQLite file: a progress publish does not wait for
another task's commit, subscribers still hear every event in seq order, and a stored event
is in the database file before anyone hears of it."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

from progress_server.events import EventBus
from progress_server.models import Event, EventName, Progress, TaskState
from progress_server.snapshots import SnapshotCache
from progress_server.store.sqlite import SqliteStore


async def test_progress_publish_returns_while_a_commit_is_pending_and_order_is_kept(
    tmp_path: Path,
) -> None:
    path = tmp_path / "progress.db"
    store = SqliteStore(path)
    await store.open()
    bus = EventBus(store, SnapshotCache())
    await bus.start()
    # What a subscriber heard, and whether the event was in the file at that moment (read
    # on a connection of its own, as after a crash).
    heard: list[tuple[int, EventName, bool]] = []
    outside = sqlite3.connect(path)

    def hear(event: Event) -> None:
        row = outside.execute("SELECT 1 FROM events WHERE seq = ?", (event.seq,)).fetchone()
        heard.append((event.seq, event.name, row is not None))

    bus.subscribe(hear)
    # Another connection holds the write lock: the store's next commit (task A's lifecycle
    # event) waits in the writer thread until it lets go, like a slow fsync.
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        lifecycle = asyncio.create_task(
            bus.publish(
                EventName.STARTED,
                "task-a",
                1,
                TaskState.DOWNLOADING,
                persist=store.insert_event,
            )
        )
        await asyncio.sleep(0.2)
        assert not lifecycle.done()
        figures = Progress(512, 1024, 1e6)
        began = time.monotonic()
        progress = await asyncio.wait_for(
            bus.publish(
                EventName.PROGRESS,
                "task-b",
                2,
                TaskState.DOWNLOADING,
                {"progress": figures.to_wire()},
                progress=figures,
            ),
            timeout=2.0,
        )
        waited = time.monotonic() - began
        assert not lifecycle.done(), "the commit was not held"
        # Its turn comes after task A's event, which nobody may hear before it is stored.
        assert heard == []
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    started = await asyncio.wait_for(lifecycle, timeout=10)
    try:
        assert waited < 1.0
        assert started.seq < progress.seq
        assert heard == [
            (started.seq, EventName.STARTED, True),
            (progress.seq, EventName.PROGRESS, False),
        ]
        assert bus.last_seq == progress.seq
    finally:
        outside.close()
        await store.close()


async def test_a_whole_download_reads_whole_though_its_last_frame_was_not_heard(
    tmp_path: Path,
) -> None:
    # In a cluster, a node hears another node's processing event from the database without
    # figures, and the relayed 100 % frame before it may have been dropped (older seq): the
    # task's record and polling must not stay at the last frame heard.
    store = SqliteStore(tmp_path / "progress.db")
    await store.open()
    bus = EventBus(store, SnapshotCache())
    await bus.start()
    try:
        queued = TaskState.PENDING
        await bus.publish(EventName.QUEUED, "t", 1, queued, persist=store.insert_event)
        figures = Progress(830, 1000, 1e6)
        moving = TaskState.DOWNLOADING
        await bus.publish(EventName.PROGRESS, "t", 1, moving, progress=figures)
        await bus.publish(
            EventName.PROCESSING, "t", 1, TaskState.PROCESSING, persist=store.insert_event
        )
        snapshot = bus.snapshots.get("t")
        assert snapshot is not None
        assert (snapshot.progress.downloaded_bytes, snapshot.progress.total_bytes) == (1000, 1000)
        assert snapshot.progress.percentage == 100.0
    finally:
        await bus.stop()
        await store.close()
