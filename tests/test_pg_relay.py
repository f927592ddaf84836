"""Progress across a cluster: a node's progress events leave in group commits, each with a
seq of its own, in notifications PostgreSQL accepts, and arrive in order."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import asyncpg
import pytest

from progress_server.cluster.eventlog import PROGRESS_CHANNEL, parse_progress, publish_progress
from progress_server.cluster.relay import ProgressRelay
from progress_server.models import Event, EventName, Progress, TaskState
from progress_server.store.postgres import PostgresStore


@pytest.fixture
async def heard(pg_url: str) -> AsyncIterator[list[str]]:
    """Every PROGRESS notification's payload, as another node's listener would get it."""
    payloads: list[str] = []
    conn = await asyncpg.connect(pg_url)

    def hear(_conn: object, _pid: int, _channel: str, payload: object) -> None:
        payloads.append(str(payload))

    await conn.add_listener(PROGRESS_CHANNEL, hear)
    try:
        yield payloads
    finally:
        await conn.close()


def _draft(task_id: str, **body: object) -> Event:
    body.setdefault("progress", {"percentage": 50.0})
    return Event(0, EventName.PROGRESS, task_id, 1, TaskState.DOWNLOADING, time.time(), body)


async def _relayed(heard: list[str], count: int) -> list[Event]:
    deadline = time.monotonic() + 10
    while True:
        events = [r.event for payload in heard for r in parse_progress(payload)]
        if len(events) >= count or time.monotonic() > deadline:
            return events
        await asyncio.sleep(0.02)


async def test_progress_published_together_leaves_in_few_commits(
    pg_store: PostgresStore, heard: list[str]
) -> None:
    relay = ProgressRelay(pg_store.pool)
    try:
        drafts = [_draft(f"t{i}") for i in range(60)]
        sent = await asyncio.gather(
            *(relay.publish(d, Progress(i, 60, 1.0)) for i, d in enumerate(drafts))
        )
    finally:
        await relay.close()
    seqs = [event.seq for event in sent]
    assert seqs == sorted(set(seqs)), "distinct seqs, in the order they were published"
    assert [e.task_id for e in sent] == [d.task_id for d in drafts]
    assert await _relayed(heard, 60) == sent
    # One commit per notification: far fewer than one per event.
    assert len(heard) <= 10, f"{len(heard)} commits for 60 events"


async def test_a_big_batch_is_split_into_notifications_postgresql_accepts(
    pg_store: PostgresStore, heard: list[str]
) -> None:
    # ~600 bytes each: 300 of them need many notifications of under 8000 bytes.
    batch = [(_draft(f"t{i}", note="x" * 500), Progress(i, None, 0.0)) for i in range(300)]
    sent = await publish_progress(pg_store.pool, batch)
    assert [e.seq for e in sent] == list(range(sent[0].seq, sent[0].seq + 300))
    assert await _relayed(heard, 300) == sent
    assert len(heard) > 1
    assert all(len(payload.encode()) < 8000 for payload in heard)


async def test_an_event_too_big_to_relay_is_refused_and_takes_no_seq(
    pg_store: PostgresStore,
) -> None:
    before = await pg_store.seq_reserved()
    with pytest.raises(ValueError, match="too large"):
        await publish_progress(pg_store.pool, [(_draft("t", note="x" * 9000), Progress())])
    assert await pg_store.seq_reserved() == before
