"""The Store protocol, one suite over both backends: SqliteStore and PostgresStore must keep
and return the same things, so a node reads the same task whichever database is behind it."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from progress_server.models import Event, EventName, Task, TaskState
from progress_server.store import SessionRow, SnapshotRow, Store, TaskChange
from progress_server.store.postgres import PostgresStore
from progress_server.store.sqlite import SqliteStore


async def _opened(store: Store) -> AsyncIterator[Store]:
    await store.open()
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[Store]:
    async for opened in _opened(SqliteStore(tmp_path / "progress.db")):
        yield opened


@pytest.fixture
async def postgres_store(pg_url: str) -> AsyncIterator[Store]:
    async for opened in _opened(PostgresStore(pg_url)):
        yield opened


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest) -> Store:
    # Looked up by name, so the sqlite half of the suite never starts PostgreSQL.
    found: Store = request.getfixturevalue(f"{request.param}_store")
    return found


def _task(owner: int, url: str = "http://a.example/f.bin", **fields: object) -> Task:
    now = time.time()
    task = Task(str(uuid.uuid4()), owner, url, None, TaskState.PENDING, now, now)
    for name, value in fields.items():
        setattr(task, name, value)
    return task


def _event(seq: int, task: Task, name: EventName = EventName.QUEUED, **body: object) -> Event:
    return Event(seq, name, task.task_id, task.owner_key_id, task.state, time.time(), dict(body))


def _unstorable(store: Store, task: Task) -> Event:
    """An event the store refuses: on SQLite its seq is taken (seq 2 is); PostgreSQL gives
    its own seq, but refuses a NUL character in text."""
    if isinstance(store, PostgresStore):
        nul = task.task_id + "\x00"
        return Event(0, EventName.ERROR, nul, task.owner_key_id, task.state, time.time(), {})
    return _event(2, task, EventName.ERROR)


async def _owner(store: Store, name: str = "alice") -> int:
    return await store.create_key(name, f"hash-{name}", False)


async def test_migrations_are_the_same_versions_on_both(store: Store) -> None:
    from progress_server.resources import migrations_dir

    shipped = sorted(int(p.name.split("_", 1)[0]) for p in migrations_dir().glob("*.sql"))
    assert await store.applied_migrations() == shipped


async def test_keys_are_created_found_listed_and_revoked(store: Store) -> None:
    alice = await store.create_key("alice", "hash-a", False)
    root = await store.create_key("root", "hash-r", True)
    assert root > alice
    found = await store.key_by_hash("hash-r")
    assert found is not None and (found.key_id, found.name, found.is_admin) == (root, "root", True)
    assert found.revoked_at is None and found.created_at <= time.time()
    assert await store.key_by_hash("nope") is None
    assert [k.name for k in await store.list_keys()] == ["alice", "root"]

    assert await store.revoke_key("alice") is True
    assert await store.revoke_key("alice") is False, "already revoked"
    assert await store.revoke_key("nobody") is False
    revoked = await store.key_by_hash("hash-a")
    assert revoked is not None and revoked.revoked_at is not None


async def test_sessions_expire_and_can_be_deleted(store: Store) -> None:
    key_id = await _owner(store)
    now = time.time()
    live = SessionRow("live-hash", key_id, "csrf-1", now, now + 3600)
    stale = SessionRow("stale-hash", key_id, "csrf-2", now - 7200, now - 3600)
    await store.insert_session(live)
    await store.insert_session(stale)
    assert await store.live_sessions(now) == [live]
    # The expired one is gone for good, not only filtered.
    assert await store.live_sessions(now - 7000) == [live]
    await store.delete_session("live-hash")
    assert await store.live_sessions(now) == []


async def test_a_task_reads_back_exactly_as_stored(store: Store) -> None:
    owner = await _owner(store)
    task = _task(
        owner,
        url="https://a.example/path/file.iso?token=x",
        requested_filename="mine.iso",
        sha256="ab" * 32,
        options={"segments": 4, "post_process": None, "nested": {"z": 1, "a": 2}},
    )
    queued = await store.insert_task(task, "idem-1", _event(1, task))
    assert task.order > 0
    assert queued.seq > 0 and queued.task_id == task.task_id
    got = await store.get_task(task.task_id)
    assert got == task
    assert got is not None and list(got.options["nested"]) == ["z", "a"], "key order kept"
    assert await store.get_task(str(uuid.uuid4())) is None
    assert await store.get_task("not-a-uuid") is None

    second = _task(owner)
    await store.insert_task(second, None, _event(2, second))
    assert second.order > task.order


async def test_listing_filters_pages_and_orders(store: Store) -> None:
    alice, bob = await _owner(store, "alice"), await _owner(store, "bob")
    tasks = []
    for i in range(5):
        task = _task(alice if i % 2 == 0 else bob)
        await store.insert_task(task, None, _event(i + 1, task))
        tasks.append(task)
    await store.update_task(tasks[2].task_id, TaskChange(state=TaskState.FAILED))
    await store.update_task(tasks[3].task_id, TaskChange(state=TaskState.COMPLETED))

    def ids(found: list[Task]) -> list[str]:
        return [t.task_id for t in found]

    everyone = ids(await store.list_tasks(None))
    assert everyone == [t.task_id for t in tasks]
    assert ids(await store.list_tasks(alice)) == [
        tasks[0].task_id,
        tasks[2].task_id,
        tasks[4].task_id,
    ]
    assert ids(await store.list_tasks(None, [TaskState.FAILED, TaskState.COMPLETED])) == [
        tasks[2].task_id,
        tasks[3].task_id,
    ]
    assert ids(await store.list_tasks(alice, [TaskState.COMPLETED])) == []
    page = await store.list_tasks(None, limit=2)
    rest = await store.list_tasks(None, limit=10, after_order=page[-1].order)
    assert ids(page) + ids(rest) == everyone
    assert ids(await store.list_tasks(None, newest_first=True, limit=2)) == [
        tasks[4].task_id,
        tasks[3].task_id,
    ]


async def test_an_idempotency_key_names_one_task_until_freed(store: Store) -> None:
    owner = await _owner(store)
    task = _task(owner)
    await store.insert_task(task, "key-1", _event(1, task))
    found = await store.task_by_idempotency_key(owner, "key-1", since=task.created_at - 1)
    assert found is not None and found.task_id == task.task_id
    assert await store.task_by_idempotency_key(owner, "key-1", since=task.created_at + 1) is None
    assert await store.task_by_idempotency_key(owner + 1, "key-1", since=0) is None

    await store.clear_idempotency_key(owner, "key-1")
    assert await store.task_by_idempotency_key(owner, "key-1", since=0) is None
    again = _task(owner)
    await store.insert_task(again, "key-1", _event(2, again))
    reused = await store.task_by_idempotency_key(owner, "key-1", since=0)
    assert reused is not None and reused.task_id == again.task_id


async def test_a_filename_goes_to_one_task_only(store: Store) -> None:
    owner = await _owner(store)
    first, second = _task(owner), _task(owner)
    await store.insert_task(first, None, _event(1, first))
    await store.insert_task(second, None, _event(2, second))
    assert await store.claim_filename(first.task_id, "report.pdf") is True
    assert await store.claim_filename(second.task_id, "report.pdf") is False
    assert await store.claim_filename(first.task_id, "report.pdf") is True, "its own name"
    assert await store.filenames_in_use() == {"report.pdf"}
    stored = await store.get_task(second.task_id)
    assert stored is not None and stored.filename is None


async def test_a_change_sets_only_its_fields_and_none_clears(store: Store) -> None:
    owner = await _owner(store)
    task = _task(owner)
    await store.insert_task(task, None, _event(1, task))
    result = {"filename": "f.bin", "size_mb": 1.5, "duration_seconds": None}
    await store.update_task(
        task.task_id,
        TaskChange(
            state=TaskState.COMPLETED,
            result=result,
            error={"type": "timeout", "message": "slow"},
            etag='"v1"',
            attempts=2,
            updated_at=1234.5,
        ),
    )
    got = await store.get_task(task.task_id)
    assert got is not None
    assert (got.state, got.result, got.etag, got.attempts, got.updated_at) == (
        TaskState.COMPLETED,
        result,
        '"v1"',
        2,
        1234.5,
    )
    assert got.error == {"type": "timeout", "message": "slow"}
    assert got.url == task.url and got.created_at == task.created_at, "untouched"

    before = time.time()
    await store.update_task(task.task_id, TaskChange(error=None, total_bytes=None))
    cleared = await store.get_task(task.task_id)
    assert cleared is not None and cleared.error is None and cleared.result == result
    assert cleared.updated_at >= before, "a change without a time is stamped now"


async def test_a_transition_is_all_or_nothing(store: Store) -> None:
    owner = await _owner(store)
    task = _task(owner)
    await store.insert_task(task, None, _event(1, task))
    started = _event(2, task, EventName.STARTED)
    await store.record_transition(started, task.task_id, TaskChange(state=TaskState.DOWNLOADING))

    # The event cannot be stored: the task change must not stay either.
    with pytest.raises(Exception):  # noqa: B017 - each backend raises its own driver error
        await store.record_transition(
            _unstorable(store, task), task.task_id, TaskChange(state=TaskState.FAILED)
        )
    got = await store.get_task(task.task_id)
    assert got is not None and got.state is TaskState.DOWNLOADING
    assert [e.name for e in await store.events_after(0)] == [EventName.QUEUED, EventName.STARTED]

    await store.record_transition(None, task.task_id, TaskChange(downloaded_bytes=7))
    moved = await store.get_task(task.task_id)
    assert moved is not None and moved.downloaded_bytes == 7


async def test_snapshots_and_deletion(store: Store) -> None:
    owner = await _owner(store)
    kept, gone = _task(owner), _task(owner)
    await store.insert_task(kept, None, _event(1, kept))
    await store.insert_task(gone, None, _event(2, gone))
    await store.save_snapshots([])
    await store.save_snapshots(
        [SnapshotRow(kept.task_id, 100, 1000), SnapshotRow(gone.task_id, 5, None)]
    )
    got = await store.get_task(kept.task_id)
    assert got is not None and (got.downloaded_bytes, got.total_bytes) == (100, 1000)

    await store.delete_task(gone.task_id)
    assert await store.get_task(gone.task_id) is None
    assert [e.task_id for e in await store.events_after(0)] == [kept.task_id]


async def test_events_read_back_in_seq_order_with_their_filters(store: Store) -> None:
    alice, bob = await _owner(store, "alice"), await _owner(store, "bob")
    a, b = _task(alice), _task(bob)
    # SQLite keeps the seqs given (stored out of order here); PostgreSQL gives its own.
    qa = await store.insert_task(a, None, _event(3, a))
    qb = await store.insert_task(b, None, _event(5, b))
    body = {"progress": {"percentage": 50.0, "downloaded_bytes": 1}, "z": [1, None], "a": "é"}
    sa = await store.insert_event(_event(9, a, EventName.STARTED, **body))
    sb = await store.insert_event(_event(7, b, EventName.STARTED))
    stored = sorted([qa, qb, sa, sb], key=lambda e: e.seq)
    seqs = [e.seq for e in stored]
    assert len(set(seqs)) == 4

    assert [e.seq for e in await store.events_after(0)] == seqs
    assert [e.seq for e in await store.events_after(seqs[1])] == seqs[2:]
    assert [e.seq for e in await store.events_after(0, limit=2)] == seqs[:2]
    assert [e.seq for e in await store.events_after(0, task_ids=[a.task_id])] == sorted(
        [qa.seq, sa.seq]
    )
    assert await store.events_after(0, task_ids=[]) == []
    assert [e.seq for e in await store.events_after(0, owner_key_id=bob)] == sorted(
        [qb.seq, sb.seq]
    )
    started = next(e for e in await store.events_after(0) if e.seq == sa.seq)
    assert started == sa or (started.body == body and started.name is EventName.STARTED)
    assert list(started.body) == ["progress", "z", "a"], "key order kept"
    assert await store.max_event_seq() == seqs[-1]


async def test_seq_reservations_survive_a_reopen(store: Store) -> None:
    assert await store.seq_reserved() == 0
    await store.reserve_seq(10_000)
    assert await store.seq_reserved() == 10_000


async def test_writes_are_timed_for_the_metrics(store: Store) -> None:
    seen: list[float] = []
    store.write_observers.append(seen.append)
    await _owner(store)
    assert seen and seen[-1] >= 0
    assert store.last_write_seconds == seen[-1]


async def test_media_and_playlist_columns_read_back(store: Store) -> None:
    owner = await _owner(store)
    parent = _task(owner, source="media")
    await store.insert_task(parent, None, _event(1, parent))
    entry = _task(owner, source="media", parent_id=parent.task_id, playlist_index=2)
    await store.insert_task(entry, None, _event(2, entry))
    await store.update_task(parent.task_id, TaskChange(entries=[entry.task_id, "b", "a"]))

    got_parent = await store.get_task(parent.task_id)
    got_entry = await store.get_task(entry.task_id)
    assert got_parent is not None and got_entry is not None
    assert got_parent.source == "media" and got_parent.entries == [entry.task_id, "b", "a"]
    assert (got_entry.parent_id, got_entry.playlist_index) == (parent.task_id, 2)
    assert got_entry.entries is None and got_entry.is_media
    await store.update_task(parent.task_id, TaskChange(entries=None))
    cleared = await store.get_task(parent.task_id)
    assert cleared is not None and cleared.entries is None
