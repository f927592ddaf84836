"""Claims, leases and fencing on a real PostgreSQL: each task runs on one node at a time,
--max-per-host holds across nodes, and a node that lost its lease changes nothing."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter

import pytest

from progress_server.cluster.actions import take_over
from progress_server.cluster.claims import Claim, TaskLeases
from progress_server.coordination import LeaseLost
from progress_server.models import Event, EventName, Task, TaskState
from progress_server.store.postgres import PostgresStore
from progress_server.store.rows import SnapshotRow, TaskChange


def _event(task_id: str, name: EventName, state: TaskState) -> Event:
    return Event(0, name, task_id, 1, state, time.time(), {})


async def _submit(pg_store: PostgresStore, url: str, state: TaskState = TaskState.PENDING) -> str:
    if not await pg_store.list_keys():
        await pg_store.create_key("k", "hash", False)
    now = time.time()
    task = Task(str(uuid.uuid4()), 1, url, None, state, now, now)
    # Seq 0: a queued event's seq is the event log's business, not this test's.
    await pg_store.insert_task(task, None, _event(task.task_id, EventName.QUEUED, state))
    await pg_store.pool.execute("DELETE FROM events WHERE task_id = $1", task.task_id)
    return task.task_id


async def _claim_all(leases: TaskLeases, max_per_host: int = 100) -> list[Claim]:
    claims = []
    while (claim := await leases.claim_next(max_per_host)) is not None:
        claims.append(claim)
    return claims


async def _events_of(pg_store: PostgresStore, task_id: str) -> list[EventName]:
    return [e.name for e in await pg_store.events_after(0, task_ids=[task_id])]


async def test_one_node_claims_the_oldest_task_first(pg_store: PostgresStore) -> None:
    ids = [await _submit(pg_store, f"http://h{i}.example/f") for i in range(4)]
    node = TaskLeases(pg_store, "a", lease_seconds=30)
    claims = await _claim_all(node)
    assert [c.task.task_id for c in claims] == ids
    assert all(c.epoch == 1 for c in claims)
    row = await pg_store.pool.fetchrow(
        "SELECT node, lease_until > now() AS live FROM tasks LIMIT 1"
    )
    assert row is not None and row["node"] == "a" and row["live"]


async def test_nodes_claiming_at_once_each_get_different_tasks(pg_store: PostgresStore) -> None:
    ids = {await _submit(pg_store, f"http://h{i % 7}.example/f{i}") for i in range(30)}
    nodes = [TaskLeases(pg_store, name, lease_seconds=30) for name in "abc"]
    results = await asyncio.gather(*(_claim_all(node) for node in nodes))
    claimed = [c.task.task_id for claims in results for c in claims]
    assert sorted(claimed) == sorted(ids), "every task claimed exactly once"
    by_node = {r["task_id"]: r["node"] for r in await pg_store.pool.fetch("SELECT * FROM tasks")}
    for name, claims in zip("abc", results, strict=True):
        assert all(by_node[c.task.task_id] == name for c in claims)


async def test_max_per_host_holds_across_the_cluster(pg_store: PostgresStore) -> None:
    a_ids = [await _submit(pg_store, f"http://a.example/{i}") for i in range(6)]
    for i in range(6):
        await _submit(pg_store, f"http://b.example/{i}")
    nodes = [TaskLeases(pg_store, name, lease_seconds=30) for name in "xyz"]

    results = await asyncio.gather(*(_claim_all(node, max_per_host=2) for node in nodes))
    claims = [c for node_claims in results for c in node_claims]
    per_host = Counter(c.task.url.split("/")[2] for c in claims)
    assert per_host == {"a.example": 2, "b.example": 2}
    # The oldest of each host were taken.
    assert sorted(c.task.task_id for c in claims if "a.example" in c.task.url) == sorted(a_ids[:2])

    # One a.example task finishes: exactly one more a.example task may start, on any node.
    done = next(c for c in claims if "a.example" in c.task.url)
    await nodes[0].write(
        done.task.task_id, done.epoch, TaskChange(state=TaskState.COMPLETED), release=True
    )
    more = await asyncio.gather(*(_claim_all(node, max_per_host=2) for node in nodes))
    assert [c.task.task_id for node_claims in more for c in node_claims] == [a_ids[2]]


async def test_an_expired_lease_moves_the_task_and_fences_the_old_node(
    pg_store: PostgresStore,
) -> None:
    task_id = await _submit(pg_store, "http://a.example/f")
    old = TaskLeases(pg_store, "old", lease_seconds=0.5)
    new = TaskLeases(pg_store, "new", lease_seconds=30)
    first = await old.claim_next(2)
    assert first is not None
    started = await old.write(
        task_id,
        first.epoch,
        TaskChange(state=TaskState.DOWNLOADING),
        _event(task_id, EventName.STARTED, TaskState.DOWNLOADING),
    )
    assert started is not None and started.seq > 0
    assert await new.claim_next(2) is None, "a live lease is not claimable"

    await asyncio.sleep(0.8)  # the old node froze past its lease
    second = await new.claim_next(2)
    assert second is not None and second.task.task_id == task_id
    assert second.epoch == first.epoch + 1
    assert second.task.state is TaskState.DOWNLOADING

    # The old node wakes up: none of its writes land.
    with pytest.raises(LeaseLost):
        await old.write(
            task_id,
            first.epoch,
            TaskChange(state=TaskState.COMPLETED),
            _event(task_id, EventName.COMPLETED, TaskState.COMPLETED),
            release=True,
        )
    assert await old.renew({task_id: first.epoch}) == {task_id}
    assert await old.save_snapshots([(SnapshotRow(task_id, 999, 1000), first.epoch)]) == {task_id}
    task = await pg_store.get_task(task_id)
    assert task is not None
    assert (task.state, task.downloaded_bytes) == (TaskState.DOWNLOADING, 0)
    assert await _events_of(pg_store, task_id) == [EventName.STARTED]

    # The new owner's writes do land, and complete the task exactly once.
    assert await new.save_snapshots([(SnapshotRow(task_id, 500, 1000), second.epoch)]) == set()
    await new.write(
        task_id,
        second.epoch,
        TaskChange(state=TaskState.COMPLETED),
        _event(task_id, EventName.COMPLETED, TaskState.COMPLETED),
        release=True,
    )
    assert await _events_of(pg_store, task_id) == [EventName.STARTED, EventName.COMPLETED]
    row = await pg_store.pool.fetchrow(
        "SELECT node, lease_until, downloaded_bytes FROM tasks WHERE task_id = $1", task_id
    )
    assert row is not None
    assert (row["node"], row["lease_until"], row["downloaded_bytes"]) == (None, None, 500)
    assert await new.claim_next(2) is None, "a completed task is never claimed again"


async def test_renewing_keeps_the_lease_and_stopping_lets_it_go(pg_store: PostgresStore) -> None:
    task_id = await _submit(pg_store, "http://a.example/f")
    owner = TaskLeases(pg_store, "owner", lease_seconds=0.6)
    other = TaskLeases(pg_store, "other", lease_seconds=30)
    claim = await owner.claim_next(2)
    assert claim is not None

    deadline = time.monotonic() + 1.5  # well past the lease
    while time.monotonic() < deadline:
        assert await owner.renew({task_id: claim.epoch}) == set()
        assert await other.claim_next(2) is None
        await asyncio.sleep(0.2)

    await asyncio.sleep(0.8)
    taken = await other.claim_next(2)
    assert taken is not None and taken.task.task_id == task_id


async def test_a_node_shutting_down_hands_its_tasks_over_at_once(pg_store: PostgresStore) -> None:
    task_id = await _submit(pg_store, "http://a.example/f")
    leaving = TaskLeases(pg_store, "leaving", lease_seconds=30)
    staying = TaskLeases(pg_store, "staying", lease_seconds=30)
    claim = await leaving.claim_next(2)
    assert claim is not None
    await leaving.release({task_id: claim.epoch})
    taken = await staying.claim_next(2)
    assert taken is not None and taken.task.task_id == task_id
    # A release with an old epoch must not free the new owner's lease.
    await leaving.release({task_id: claim.epoch})
    assert await leaving.claim_next(2) is None


async def test_processing_needs_no_transfer_slot(pg_store: PostgresStore) -> None:
    pending = await _submit(pg_store, "http://a.example/pending")
    processing = await _submit(pg_store, "http://a.example/processing", TaskState.PROCESSING)
    node = TaskLeases(pg_store, "n", lease_seconds=30)

    # A node with no free slot still takes processing work, and only that.
    claim = await node.claim_next(2, transfers=False)
    assert claim is not None and claim.task.task_id == processing
    assert await node.claim_next(2, transfers=False) is None
    # A processing task does not count against its host.
    transfer = await node.claim_next(1)
    assert transfer is not None and transfer.task.task_id == pending


async def test_a_user_action_from_any_node_ends_the_run(pg_store: PostgresStore) -> None:
    task_id = await _submit(pg_store, "http://a.example/f")
    runner = TaskLeases(pg_store, "runner", lease_seconds=30)
    claim = await runner.claim_next(2)
    assert claim is not None

    active = (TaskState.PENDING, TaskState.DOWNLOADING, TaskState.PROCESSING)
    cancelled = await take_over(
        pg_store,
        task_id,
        active,
        TaskChange(state=TaskState.CANCELLED),
        _event(task_id, EventName.CANCELLED, TaskState.CANCELLED),
    )
    assert cancelled is not None and cancelled.seq > 0
    with pytest.raises(LeaseLost):
        await runner.write(task_id, claim.epoch, TaskChange(downloaded_bytes=10))
    task = await pg_store.get_task(task_id)
    assert task is not None and task.state is TaskState.CANCELLED

    # A second cancel finds the task no longer active: nothing changes, no event.
    again = await take_over(
        pg_store,
        task_id,
        active,
        TaskChange(state=TaskState.CANCELLED),
        _event(task_id, EventName.CANCELLED, TaskState.CANCELLED),
    )
    assert again is None
    assert await _events_of(pg_store, task_id) == [EventName.CANCELLED]
    assert await runner.claim_next(2) is None
