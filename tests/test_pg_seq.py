"""The cluster's seq: strictly increasing in commit order, so a `seq > last` reader running
beside any number of writers sees every committed event exactly once, in order."""

from __future__ import annotations

import asyncio
import os
import random
import time
import uuid
from dataclasses import replace

import asyncpg

from progress_server.cluster.eventlog import (
    EVENTS_CHANNEL,
    PROGRESS_CHANNEL,
    append,
    append_event,
    append_guarded,
    parse_progress,
    publish_progress,
)
from progress_server.models import Event, EventName, Progress, Task, TaskState
from progress_server.store.postgres import PostgresStore


def _draft(task_id: str, name: EventName = EventName.QUEUED) -> Event:
    return Event(
        seq=0,
        name=name,
        task_id=task_id,
        owner_key_id=1,
        state=TaskState.PENDING,
        timestamp=time.time(),
        body={"writer": task_id},
    )


class _Rollback(Exception):
    pass


async def test_a_seq_reader_beside_concurrent_writers_sees_every_commit_once_in_order(
    pg_store: PostgresStore,
) -> None:
    await pg_store.create_key("k", "hash", False)
    task_ids = []
    for index in range(20):
        task = Task(str(uuid.uuid4()), 1, f"http://h{index}/", None, TaskState.PENDING, 0, 0)
        await pg_store.insert_task(task, None, replace(_draft(task.task_id), seq=index + 1))
        task_ids.append(task.task_id)
    # Those queued events used seqs the test chose; the counter starts past them.
    await pg_store.reserve_seq(await pg_store.max_event_seq())
    seed = int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    committed: list[int] = []
    progress_seqs: list[int] = []
    rolled_back = 0

    async def writer(index: int) -> None:
        nonlocal rolled_back
        for n in range(12):
            await asyncio.sleep(rng.uniform(0, 0.004))
            if rng.random() < 0.2:
                # Progress takes seqs from the same counter without storing a row.
                batch = [
                    (_draft(f"w{index}", EventName.PROGRESS), Progress(n, 100, 1.0))
                    for _ in range(rng.randint(1, 3))
                ]
                progress_seqs.extend(e.seq for e in await publish_progress(pg_store.pool, batch))
                continue
            if rng.random() < 0.3:
                # A fenced write: the task change and its event in one statement, taken
                # only when the epoch matches (a wrong one takes no seq).
                epoch = 0 if rng.random() < 0.8 else 99
                async with pg_store.pool.acquire() as db:
                    fenced = await append_guarded(
                        db,
                        "UPDATE tasks SET attempts = attempts + 1"
                        " WHERE task_id = $1 AND lease_epoch = $2 RETURNING task_id",
                        [task_ids[index], epoch],
                        _draft(f"w{index}"),
                    )
                assert (fenced is None) == (epoch == 99)
                if fenced is not None:
                    committed.append(fenced.event.seq)
                continue
            try:
                async with pg_store.pool.acquire() as db, db.transaction():
                    event = await append_event(db, _draft(f"w{index}"))
                    # Hold the transaction open a while: a slow commit is exactly what
                    # would let a plain sequence's reader run past this event.
                    await asyncio.sleep(rng.uniform(0, 0.006))
                    if rng.random() < 0.25:
                        raise _Rollback
            except _Rollback:
                rolled_back += 1
                continue
            committed.append(event.seq)

    seen: list[int] = []
    writers_done = asyncio.Event()

    async def reader() -> None:
        last = await pg_store.max_event_seq()
        while True:
            done = writers_done.is_set()
            # The same read a node's feed does.
            for event in await pg_store.events_after(last):
                seen.append(event.seq)
                last = event.seq
            if done:
                return
            await asyncio.sleep(rng.uniform(0, 0.002))

    reading = asyncio.create_task(reader())
    await asyncio.gather(*(writer(i) for i in range(20)))
    writers_done.set()
    await reading

    context = f"seed {seed}"
    assert rolled_back > 0 and committed, context
    assert len(seen) == len(set(seen)), f"an event was read twice ({context})"
    assert seen == sorted(seen), f"events out of order ({context})"
    assert seen == sorted(committed), f"a committed event was skipped ({context})"
    # Progress seqs are never reused by stored events, nor by each other.
    assert not set(progress_seqs) & set(committed), context
    assert len(set(progress_seqs)) == len(progress_seqs), context


async def test_an_append_waits_for_the_slower_one_before_it_and_reuses_a_rolled_back_seq(
    pg_store: PostgresStore,
) -> None:
    async with pg_store.pool.acquire() as slow_conn:
        slow = slow_conn.transaction()
        await slow.start()
        first = await append_event(slow_conn, _draft("slow"))

        fast = asyncio.create_task(append(pg_store.pool, _draft("fast")))
        await asyncio.sleep(0.3)
        # The fast writer may not take a seq while an earlier one is uncommitted.
        assert not fast.done()
        assert await pg_store.events_after(0) == []

        await slow.rollback()
        after_rollback = await asyncio.wait_for(fast, 10)
        # The rolled-back number is handed out again: no gap for a reader to wonder about.
        assert after_rollback.seq == first.seq
        assert [e.seq for e in await pg_store.events_after(0)] == [first.seq]

        slow = slow_conn.transaction()
        await slow.start()
        held = await append_event(slow_conn, _draft("slow"))
        fast = asyncio.create_task(append(pg_store.pool, _draft("fast")))
        await asyncio.sleep(0.3)
        assert not fast.done()
        await slow.commit()
        behind = await asyncio.wait_for(fast, 10)
        assert (held.seq, behind.seq) == (first.seq + 1, first.seq + 2)
        assert [e.task_id for e in await pg_store.events_after(first.seq)] == ["slow", "fast"]


async def test_a_plain_sequence_would_let_a_reader_skip_a_slow_commit(pg_url: str) -> None:
    # Why event_seq exists: the same interleaving on a bigserial loses an event for good.
    conn_slow = await asyncpg.connect(pg_url)
    conn_fast = await asyncpg.connect(pg_url)
    try:
        await conn_slow.execute("CREATE TABLE naive (seq bigserial PRIMARY KEY, who text)")
        slow = conn_slow.transaction()
        await slow.start()
        await conn_slow.execute("INSERT INTO naive (who) VALUES ('slow')")
        await conn_fast.execute("INSERT INTO naive (who) VALUES ('fast')")
        seen = [r["seq"] for r in await conn_fast.fetch("SELECT seq FROM naive WHERE seq > 0")]
        await slow.commit()
        seen += [
            r["seq"]
            for r in await conn_fast.fetch("SELECT seq FROM naive WHERE seq > $1", seen[-1])
        ]
        assert seen == [2], "the reader moved past seq 1 before it committed"
    finally:
        await conn_slow.close()
        await conn_fast.close()


async def test_notifications_arrive_in_commit_order_and_carry_progress(
    pg_store: PostgresStore, pg_url: str
) -> None:
    heard: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
    listener = await asyncpg.connect(pg_url)

    def hear(_conn: object, _pid: int, channel: str, payload: object) -> None:
        heard.put_nowait((channel, str(payload)))

    await listener.add_listener(EVENTS_CHANNEL, hear)
    await listener.add_listener(PROGRESS_CHANNEL, hear)
    try:
        stored = await append(pg_store.pool, _draft("a"))
        try:
            async with pg_store.pool.acquire() as db, db.transaction():
                await append_event(db, _draft("rolled-back"))
                raise _Rollback
        except _Rollback:
            pass
        figures = [Progress(512, 1024, 2_000_000.0), Progress(7, None, 0.0)]
        batch = [(_draft(f"p{i}", EventName.PROGRESS), p) for i, p in enumerate(figures)]
        sent = await publish_progress(pg_store.pool, batch)
        later = await append(pg_store.pool, _draft("a", EventName.STARTED))

        got = [await asyncio.wait_for(heard.get(), 5) for _ in range(3)]
        assert [channel for channel, _ in got] == [EVENTS_CHANNEL, PROGRESS_CHANNEL, EVENTS_CHANNEL]
        assert int(got[0][1]) == stored.seq
        # One notification carries the whole batch, each event with its own seq.
        relayed = parse_progress(got[1][1])
        assert [r.event for r in relayed] == sent
        assert [r.progress for r in relayed] == figures
        assert int(got[2][1]) == later.seq
        assert stored.seq < sent[0].seq < sent[1].seq < later.seq
        # Nothing was announced for the rolled-back append.
        await asyncio.sleep(0.2)
        assert heard.empty()
    finally:
        await listener.close()
