"""Submitting from any node: a task and its queued event in one write, its seq from the
cluster's log, one task per Idempotency-Key and one task per filename even when two nodes
store them at once."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from progress_server.cluster.claims import TaskLeases
from progress_server.models import Event, EventName, Task, TaskState
from progress_server.store import DuplicateSubmission, FilenameTaken
from progress_server.store.postgres import PostgresStore


def _new(owner: int, url: str = "http://a.example/f") -> tuple[Task, Event]:
    now = time.time()
    task = Task(str(uuid.uuid4()), owner, url, None, TaskState.PENDING, now, now)
    draft = Event(0, EventName.QUEUED, task.task_id, owner, TaskState.PENDING, now, {})
    return task, draft


async def test_a_submitted_task_is_stored_with_its_queued_event(pg_store: PostgresStore) -> None:
    owner = await pg_store.create_key("k", "hash", False)
    first, first_draft = _new(owner)
    second, second_draft = _new(owner)
    queued = await pg_store.insert_task(first, None, first_draft)
    later = await pg_store.insert_task(second, None, second_draft)
    assert 0 < queued.seq < later.seq
    assert 0 < first.order < second.order
    assert await pg_store.get_task(first.task_id) == first
    assert await pg_store.events_after(0) == [queued, later]

    claim = await TaskLeases(pg_store, "n", lease_seconds=30).claim_next(2)
    assert claim is not None and claim.task.task_id == first.task_id


async def test_one_task_per_idempotency_key_across_nodes(pg_url: str) -> None:
    nodes = [PostgresStore(pg_url) for _ in range(4)]
    for node in nodes:
        await node.open()
    try:
        owner = await nodes[0].create_key("k", "hash", False)
        attempts = [_new(owner) for _ in nodes]
        results = await asyncio.gather(
            *(
                node.insert_task(task, "same-key", draft)
                for node, (task, draft) in zip(nodes, attempts, strict=True)
            ),
            return_exceptions=True,
        )
        stored = [event for event in results if isinstance(event, Event)]
        assert len(stored) == 1, "exactly one node stored the task"
        refused = [r for r in results if not isinstance(r, Event)]
        assert all(isinstance(r, DuplicateSubmission) for r in refused), refused
        winner = next(
            t for (t, _), e in zip(attempts, results, strict=True) if isinstance(e, Event)
        )
        found = await nodes[1].task_by_idempotency_key(owner, "same-key", since=0)
        assert found is not None and found.task_id == winner.task_id
        assert [t.task_id for t in await nodes[2].list_tasks(None)] == [winner.task_id]
        assert await nodes[3].events_after(0) == stored, "the losers took no seq"
    finally:
        for node in nodes:
            await node.close()


async def test_one_task_per_filename_across_nodes(pg_url: str) -> None:
    nodes = [PostgresStore(pg_url) for _ in range(3)]
    for node in nodes:
        await node.open()
    try:
        owner = await nodes[0].create_key("k", "hash", False)
        attempts = [_new(owner) for _ in nodes]
        for task, _ in attempts:
            task.filename = "same.iso"
        results = await asyncio.gather(
            *(
                node.insert_task(task, None, draft)
                for node, (task, draft) in zip(nodes, attempts, strict=True)
            ),
            return_exceptions=True,
        )
        assert sum(isinstance(r, Event) for r in results) == 1
        assert all(isinstance(r, FilenameTaken) for r in results if not isinstance(r, Event))
        assert [t.filename for t in await nodes[1].list_tasks(None)] == ["same.iso"]
        assert len(await nodes[2].events_after(0)) == 1, "the refused took no seq"
        # A name claimed later is refused the same way (False, not an error).
        other, draft = _new(owner)
        await nodes[0].insert_task(other, None, draft)
        assert await nodes[2].claim_filename(other.task_id, "same.iso") is False
        with pytest.raises(FilenameTaken):
            named, named_draft = _new(owner)
            named.filename = "same.iso"
            await nodes[1].insert_task(named, None, named_draft)
    finally:
        for node in nodes:
            await node.close()
