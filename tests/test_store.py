"""The SQLite store: migrations once each, WAL, snapshots written while downloads run."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from progress_server.resources import migrations_dir
from progress_server.store.sqlite import SqliteStore
from tests.apiclient import Api, eventually, read_only_db
from tests.origins import Origin


async def test_migrations_are_applied_once_and_recorded(tmp_path: Path) -> None:
    db_path = tmp_path / "progress.db"
    shipped = sorted(int(p.name.split("_", 1)[0]) for p in migrations_dir().glob("*.sql"))
    assert shipped[0] == 1

    store = SqliteStore(db_path)
    await store.open()
    assert await store.applied_migrations() == shipped
    await store.create_key("k", "hash", False)
    await store.close()

    with read_only_db(db_path) as db:
        first = db.execute("SELECT version, name, applied_at FROM schema_migrations").fetchall()
        assert first[0][1] == "0001_initial.sql"
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"

    # Re-opening applies nothing again (a second CREATE TABLE would fail) and keeps data.
    again = SqliteStore(db_path)
    await again.open()
    assert await again.applied_migrations() == shipped
    assert [k.name for k in await again.list_keys()] == ["k"]
    await again.close()
    with read_only_db(db_path) as db:
        assert db.execute("SELECT version, name, applied_at FROM schema_migrations").fetchall() == (
            first
        )


async def test_progress_snapshots_reach_sqlite_during_a_download(api: Api, origin: Origin) -> None:
    size = 3_000_000
    task = await api.submit(origin.url(size=size, rate=600_000))
    task_id = task["task_id"]
    seen: list[int] = []

    async def grew_twice() -> bool:
        with read_only_db(api.store_path) as db:
            row = db.execute(
                "SELECT downloaded_bytes, total_bytes FROM tasks WHERE task_id = ?", (task_id,)
            ).fetchone()
        if row[0] > 0 and (not seen or row[0] > seen[-1]):
            assert row[1] == size
            seen.append(row[0])
        return len(seen) >= 3

    await eventually(grew_twice, within=30, interval=0.2)
    state = (await api.task(task_id))["state"]
    assert state == "downloading", "the rows must grow while the download runs"
    assert seen == sorted(seen) and seen[-1] < size


async def test_seq_never_repeats_after_a_reopen(tmp_path: Path) -> None:
    from progress_server.events import EventBus
    from progress_server.models import EventName, TaskState
    from progress_server.snapshots import SnapshotCache

    store = SqliteStore(tmp_path / "progress.db")
    await store.open()
    bus = EventBus(store, SnapshotCache())
    await bus.start()
    # Progress events are not stored one by one; their seq must still never come back.
    last = await bus.publish(EventName.PROGRESS, "t", 1, TaskState.DOWNLOADING)
    await store.close()

    store = SqliteStore(tmp_path / "progress.db")
    await store.open()
    bus = EventBus(store, SnapshotCache())
    await bus.start()
    after = await bus.publish(EventName.PROGRESS, "t", 1, TaskState.DOWNLOADING)
    await store.close()
    assert after.seq > last.seq


async def test_a_failing_migration_leaves_nothing_and_a_fixed_one_is_recorded(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "migrations"
    folder.mkdir()
    for shipped in migrations_dir().glob("*.sql"):
        (folder / shipped.name).write_text(shipped.read_text())
    # A quote in the name: the bookkeeping row is written with parameters, not pasted text.
    extra = folder / "0099_o'brien.sql"
    extra.write_text("CREATE TABLE extra (x INTEGER);\nINSERT INTO no_such_table VALUES (1);\n")
    db_path = tmp_path / "progress.db"

    store = SqliteStore(db_path, migrations=folder)
    with pytest.raises(sqlite3.OperationalError, match="no_such_table"):
        await store.open()
    await store.close()
    with read_only_db(db_path) as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
        assert "extra" not in tables, "half a migration must not stay applied"
        versions = [row[0] for row in db.execute("SELECT version FROM schema_migrations")]
        assert 99 not in versions and 1 in versions

    extra.write_text("CREATE TABLE extra (x INTEGER);\n")
    store = SqliteStore(db_path, migrations=folder)
    await store.open()
    assert (await store.applied_migrations())[-1] == 99
    await store.close()
    with read_only_db(db_path) as db:
        row = db.execute("SELECT name FROM schema_migrations WHERE version = 99").fetchone()
        assert row == ("0099_o'brien.sql",)
