"""ClusterFeed: follows the cluster's event log for one node and feeds its local fan-out.

One dedicated connection LISTENs on four channels. A stored-event notification is only a
wake-up: the feed reads `seq > cursor` from the table, so a lost notification costs at
most one poll interval (it also reads once a second, and checks the connection then). A
progress notification carries its event, which was never stored: it is passed on unless a
newer event was already delivered (progress is a figure, the next one follows shortly).
A deletion notification names a task deleted by any node (deletions leave no event); a key
notification tells the store that API keys changed (Store.key_generation).

Notifications arrive in commit order, which is seq order (see eventlog), and are handled
one at a time in arrival order, so the node's subscribers get events in seq order. When
the connection drops (a PostgreSQL restart, `pg_terminate_backend`, a network fault) the
feed reconnects, LISTENs again and then reads everything past its cursor: nothing stored
is missed, whatever happened while it was away. Deletions notified meanwhile are lost, so
`on_reconnected` is told then, to look for them in the database. The pool's connections
died with the server too: they are replaced before their next use.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncpg

from progress_server.cluster.eventlog import (
    EVENTS_CHANNEL,
    PROGRESS_CHANNEL,
    RelayedProgress,
    parse_progress,
)
from progress_server.models import Event, Progress
from progress_server.store.postgres import PostgresStore
from progress_server.store.postgres_rows import DATABASE_ERRORS, DELETIONS_CHANNEL, KEYS_CHANNEL

log = logging.getLogger(__name__)

# Called for each event in seq order; the progress figures come with relayed progress only.
Deliver = Callable[[Event, Progress | None], None]

# Stored events read per query while catching up.
_READ_BATCH = 500


class _ConnectionLost(Exception):
    pass


class FeedClosed(Exception):
    """The feed was stopped: what a writer waited for will not be delivered by it."""


@dataclass(frozen=True)
class _Deleted:
    task_id: str


# What the LISTEN callbacks hand to the feed's one loop: a stored event's seq, a relayed
# progress event, a deleted task, or the news that the connection is gone.
_Item = int | RelayedProgress | _Deleted | _ConnectionLost


class ClusterFeed:
    """Delivers every event of the cluster, once and in seq order, to `deliver`."""

    def __init__(
        self,
        url: str,
        store: PostgresStore,
        deliver: Deliver,
        *,
        after_seq: int,
        poll_interval: float = 1.0,
        reconnect_delay: float = 0.5,
        on_deleted: Callable[[str], None] | None = None,
        on_reconnected: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._url = url
        self._store = store
        self._deliver = deliver
        self._on_deleted = on_deleted
        self._on_reconnected = on_reconnected
        self.closed = False
        self._poll_interval = poll_interval
        self._reconnect_delay = reconnect_delay
        # The highest stored seq read from the table: the next read starts after it.
        self.cursor = after_seq
        # The highest seq delivered, stored or relayed: older progress is dropped.
        self.delivered = after_seq
        self.connected = asyncio.Event()
        self.reconnects = 0
        # The server process of the LISTEN connection (tests terminate it on purpose).
        self.listener_pid: int | None = None
        # Set (and replaced) each time the cursor moves on.
        self._advanced = asyncio.Event()

    async def run(self) -> None:
        """Follow the log until cancelled, reconnecting whenever the connection fails."""
        try:
            while True:
                try:
                    await self._follow()
                except TimeoutError:
                    log.warning("cluster event feed: database not answering; reconnecting")
                except (*DATABASE_ERRORS, _ConnectionLost):
                    log.warning("cluster event feed lost its connection; reconnecting")
                except Exception:  # the feed must outlive any one failure: it is the node's ears
                    log.exception("cluster event feed failed; reconnecting")
                self.reconnects += 1
                # The pool's connections most likely went the same way: replace them before
                # a writer gets one, instead of failing its write.
                await self._store.pool.expire_connections()
                await asyncio.sleep(self._reconnect_delay)
        finally:
            self.closed = True
            self._wake_waiters()

    async def _follow(self) -> None:
        queue: asyncio.Queue[_Item] = asyncio.Queue()

        def on_event(_conn: object, _pid: int, _channel: str, payload: object) -> None:
            queue.put_nowait(int(str(payload)))

        def on_progress(_conn: object, _pid: int, _channel: str, payload: object) -> None:
            for relayed in parse_progress(str(payload)):
                queue.put_nowait(relayed)

        def on_deleted(_conn: object, _pid: int, _channel: str, payload: object) -> None:
            queue.put_nowait(_Deleted(str(payload)))

        def on_keys(_conn: object, _pid: int, _channel: str, _payload: object) -> None:
            # Not queued: a key change orders nothing, and a revocation must bite at once.
            self._store.key_changed()

        def on_lost(_conn: object) -> None:
            queue.put_nowait(_ConnectionLost())

        name = f"{self._store.application_name} feed"
        conn = await asyncpg.connect(
            self._url, timeout=10, server_settings={"application_name": name[:63]}
        )
        try:
            conn.add_termination_listener(on_lost)
            await conn.add_listener(EVENTS_CHANNEL, on_event)
            await conn.add_listener(PROGRESS_CHANNEL, on_progress)
            await conn.add_listener(DELETIONS_CHANNEL, on_deleted)
            await conn.add_listener(KEYS_CHANNEL, on_keys)
            self.listener_pid = conn.get_server_pid()
            # Listening first, then reading: an event committed in between is both read
            # and announced, and the cursor makes the second sighting a no-op.
            await self._catch_up()
            if self.reconnects:
                # Keys may have changed while nobody listened.
                self._store.key_changed()
            if self.reconnects and self._on_reconnected is not None:
                try:
                    await self._on_reconnected()
                except DATABASE_ERRORS:
                    raise
                except Exception:  # a broken callback must not stop the feed
                    log.exception("cluster event feed: after-reconnect check failed")
            self.connected.set()
            while True:
                try:
                    # asyncio.timeout, not wait_for: on 3.11, wait_for can swallow a
                    # cancel that lands as the queue yields, and the feed never stops.
                    async with asyncio.timeout(self._poll_interval):
                        item = await queue.get()
                except TimeoutError:
                    # A half-open connection gives no termination callback: ask it.
                    await conn.execute("SELECT 1", timeout=max(self._poll_interval, 5.0))
                    await self._catch_up()
                    continue
                if isinstance(item, _ConnectionLost):
                    raise item
                if isinstance(item, RelayedProgress):
                    self._relay(item)
                elif isinstance(item, _Deleted):
                    if self._on_deleted is not None:
                        self._on_deleted(item.task_id)
                elif item > self.cursor:
                    await self._catch_up()
        finally:
            self.connected.clear()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await conn.close()
            if not conn.is_closed():
                conn.terminate()

    async def read_through(self, seq: int) -> None:
        """Wait until the stored events up to `seq` were delivered: a node that wrote an
        event waits for it so its own subscribers and snapshots know it before it answers.
        Raises FeedClosed when the feed stops first."""
        while self.cursor < seq:
            if self.closed:
                raise FeedClosed(f"seq {seq} was not delivered: the feed stopped")
            await self._advanced.wait()

    async def _catch_up(self) -> None:
        while True:
            events = await self._store.events_after(self.cursor, limit=_READ_BATCH)
            for event in events:
                self.cursor = event.seq
                # Stored events are never dropped, even behind relayed progress.
                self.delivered = max(self.delivered, event.seq)
                self._hand_over(event, None)
            if events:
                self._wake_waiters()
            if len(events) < _READ_BATCH:
                return

    def _wake_waiters(self) -> None:
        self._advanced.set()
        self._advanced = asyncio.Event()

    def _relay(self, relayed: RelayedProgress) -> None:
        if relayed.event.seq <= self.delivered:
            return
        self.delivered = relayed.event.seq
        self._hand_over(relayed.event, relayed.progress)

    def _hand_over(self, event: Event, progress: Progress | None) -> None:
        try:
            self._deliver(event, progress)
        except Exception:  # a broken subscriber must not stop the feed
            log.exception("cluster event feed: delivering seq %s failed", event.seq)
