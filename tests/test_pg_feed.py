"""ClusterFeed on a real PostgreSQL: every node's events reach a node's subscribers once and
in seq order, live, and nothing stored is lost when the LISTEN connection or the whole
database goes away and comes back."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator

import asyncpg
import pytest

from progress_server.cluster.eventlog import PROGRESS_CHANNEL, append, publish_progress
from progress_server.cluster.listener import ClusterFeed
from progress_server.models import Event, EventName, Progress, TaskState
from progress_server.store.postgres import PostgresStore
from progress_server.store.postgres_migrations import apply_migrations
from tests.pgserver import PgServer


def _draft(task_id: str, name: EventName = EventName.STARTED) -> Event:
    return Event(0, name, task_id, 1, TaskState.DOWNLOADING, time.time(), {"from": task_id})


class _Received:
    def __init__(self) -> None:
        self.events: list[tuple[Event, Progress | None]] = []
        self.changed = asyncio.Event()

    def __call__(self, event: Event, progress: Progress | None) -> None:
        self.events.append((event, progress))
        self.changed.set()

    @property
    def seqs(self) -> list[int]:
        return [event.seq for event, _ in self.events]

    def stored_seqs(self) -> list[int]:
        return [event.seq for event, progress in self.events if progress is None]

    async def until(self, count: int, within: float = 10) -> None:
        deadline = time.monotonic() + within
        while len(self.events) < count:
            self.changed.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"got {len(self.events)} of {count} events: {self.seqs}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), remaining)


@pytest.fixture
async def feed_of(pg_store: PostgresStore) -> AsyncIterator[_FeedStarter]:
    starter = _FeedStarter(pg_store)
    try:
        yield starter
    finally:
        await starter.stop()


class _FeedStarter:
    def __init__(self, store: PostgresStore) -> None:
        self.store = store
        self.runs: list[asyncio.Task[None]] = []

    async def start(
        self, poll_interval: float = 30, after_seq: int = 0
    ) -> tuple[ClusterFeed, _Received]:
        received = _Received()
        feed = ClusterFeed(
            self.store.url,
            self.store,
            received,
            after_seq=after_seq,
            poll_interval=poll_interval,
            reconnect_delay=0.1,
        )
        self.runs.append(asyncio.create_task(feed.run()))
        await asyncio.wait_for(feed.connected.wait(), 10)
        return feed, received

    async def stop(self) -> None:
        for run in self.runs:
            run.cancel()
        await asyncio.gather(*self.runs, return_exceptions=True)


async def test_events_from_every_node_arrive_live_once_and_in_order(
    pg_store: PostgresStore, pg_url: str, feed_of: _FeedStarter
) -> None:
    before = await append(pg_store.pool, _draft("before"))
    # A long poll interval: what arrives in time arrived through NOTIFY.
    feed, received = await feed_of.start(poll_interval=30)
    await received.until(1)
    assert received.seqs == [before.seq], "the backlog is read at start"

    nodes = [PostgresStore(pg_url) for _ in range(3)]
    for node in nodes:
        await node.open()
    try:

        async def node_writes(index: int, node: PostgresStore) -> list[Event]:
            sent = []
            for n in range(10):
                if n % 3 == 2:
                    draft = _draft(f"n{index}", EventName.PROGRESS)
                    sent += await publish_progress(node.pool, [(draft, Progress(n, 10, 1.0))])
                else:
                    sent.append(await append(node.pool, _draft(f"n{index}")))
            return sent

        results = await asyncio.gather(*(node_writes(i, n) for i, n in enumerate(nodes)))
    finally:
        for node in nodes:
            await node.close()

    stored = sorted(e.seq for sent in results for e in sent if e.name is not EventName.PROGRESS)
    await received.until(1 + len(stored), within=10)
    await asyncio.sleep(0.3)  # anything more would be a duplicate
    assert received.seqs == sorted(set(received.seqs)), "in seq order, each once"
    assert received.stored_seqs() == [before.seq, *stored], "no stored event missed"
    # Relayed progress carries its figures; the bodies survive the trip.
    relayed = [(e, p) for e, p in received.events if p is not None]
    assert relayed, "progress reached the feed"
    assert all(e.body == {"from": e.task_id} for e, _ in received.events)
    assert feed.reconnects == 0


async def test_a_stored_event_whose_notification_never_came_is_read_by_the_poll(
    pg_store: PostgresStore, feed_of: _FeedStarter
) -> None:
    _, received = await feed_of.start(poll_interval=0.3)
    # Written without pg_notify, as if the notification were lost.
    await pg_store.pool.execute(
        "WITH next AS (UPDATE event_seq SET last_seq = last_seq + 1 WHERE id = 1"
        " RETURNING last_seq)"
        " INSERT INTO events (seq, task_id, owner_key_id, event, state, body, created_at)"
        " SELECT last_seq, 'quiet', 1, 'download.started', 'downloading', '{}', 0 FROM next"
    )
    await received.until(1, within=5)
    assert [e.task_id for e, _ in received.events] == ["quiet"]


async def test_progress_older_than_what_was_delivered_is_dropped(
    pg_store: PostgresStore, feed_of: _FeedStarter
) -> None:
    _, received = await feed_of.start(poll_interval=30)
    newer = await append(pg_store.pool, _draft("t"))
    await received.until(1)
    stale = json.dumps(
        [
            {
                "task_id": "t",
                "owner_key_id": 1,
                "event": "download.progress",
                "state": "downloading",
                "timestamp": 0,
                "body": {},
                "downloaded_bytes": 1,
                "total_bytes": 2,
                "speed_bps": 0,
            }
        ]
    )
    await pg_store.pool.execute(
        "SELECT pg_notify($1, $2)", PROGRESS_CHANNEL, f"{newer.seq} {stale}"
    )
    later = await append(pg_store.pool, _draft("t"))
    await received.until(2)
    assert received.seqs == [newer.seq, later.seq]


async def test_a_terminated_listen_connection_loses_nothing(
    pg_store: PostgresStore, pg_url: str, feed_of: _FeedStarter
) -> None:
    feed, received = await feed_of.start(poll_interval=30)
    admin = await asyncpg.connect(pg_url)
    committed: list[int] = []
    try:

        async def write(count: int) -> None:
            for _ in range(count):
                committed.append((await append(pg_store.pool, _draft("w"))).seq)
                await asyncio.sleep(0.01)

        writing = asyncio.create_task(write(60))
        for _ in range(3):
            await asyncio.sleep(0.1)
            pid = feed.listener_pid
            assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
            # Wait for the feed to be back before cutting it again.
            deadline = time.monotonic() + 10
            while feed.listener_pid == pid or not feed.connected.is_set():
                assert time.monotonic() < deadline, "the feed did not reconnect"
                await asyncio.sleep(0.02)
        await writing
    finally:
        await admin.close()

    await received.until(len(committed), within=10)
    await asyncio.sleep(0.3)
    assert received.seqs == committed, "every event once, in order, across three reconnects"
    assert feed.reconnects >= 3


async def test_a_database_restart_mid_run_loses_nothing() -> None:
    with PgServer() as server:
        url = await server.create_database("restarted")
        await apply_migrations(url)
        store = PostgresStore(url)
        await store.open()
        received = _Received()
        feed = ClusterFeed(
            url, store, received, after_seq=0, poll_interval=0.5, reconnect_delay=0.1
        )
        run = asyncio.create_task(feed.run())
        try:
            await asyncio.wait_for(feed.connected.wait(), 10)
            committed = [(await append(store.pool, _draft("a"))).seq for _ in range(5)]
            await received.until(5)

            await asyncio.to_thread(server.restart)
            # The pool's connections died with the server; appends retry once it is back.
            for _ in range(5):
                for attempt in range(50):
                    try:
                        committed.append((await append(store.pool, _draft("b"))).seq)
                        break
                    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                        if attempt == 49:
                            raise
                        await asyncio.sleep(0.1)

            await received.until(10, within=15)
            assert received.seqs == committed
            assert feed.reconnects >= 1
        finally:
            run.cancel()
            await asyncio.gather(run, return_exceptions=True)
            await store.close()


async def test_a_writer_can_wait_until_its_event_was_delivered(
    pg_store: PostgresStore, feed_of: _FeedStarter
) -> None:
    # Long poll, so only the notification can bring the event in time.
    feed, received = await feed_of.start(poll_interval=30)
    for _ in range(5):
        event = await append(pg_store.pool, _draft("mine"))
        async with asyncio.timeout(10):
            await feed.read_through(event.seq)
        assert received.seqs[-1] == event.seq, "delivered before read_through returned"
