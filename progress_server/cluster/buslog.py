"""ClusterLog: the EventBus's log in cluster mode, where the database gives every seq.

A stored event is written by whichever node acts (its seq from the cluster's counter, in
commit order), then the writer waits until its own ClusterFeed has read it back: every
node, the writer included, delivers events only as its feed reads them, one at a time in
seq order, so a node's snapshots and WebSockets see one order, the cluster's. Progress
events are not stored; they leave through the ProgressRelay in group commits and come back
the same way, relayed to every node. A WebSocket's `after_seq` replay reads the stored
events up to `last_seq`, the highest seq this node delivered, and the live stream goes on
from there: gapless across nodes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from progress_server.cluster.listener import ClusterFeed
from progress_server.cluster.relay import ProgressRelay
from progress_server.events import Deliver, Persist
from progress_server.models import Event, Progress
from progress_server.store.postgres import PostgresStore
from progress_server.store.postgres_rows import DATABASE_ERRORS

log = logging.getLogger(__name__)

# A relay failure (the database restarting) is logged at most this often: progress is
# never owed, the next event follows shortly.
_RELAY_WARNING_SECONDS = 30.0


class ClusterLog:
    def __init__(self, store: PostgresStore, *, poll_interval: float = 1.0) -> None:
        self._store = store
        self._poll_interval = poll_interval
        self._relay = ProgressRelay(store.pool)
        self.feed: ClusterFeed | None = None
        self._follower: asyncio.Task[None] | None = None
        # Told of tasks another node deleted (and of every task found gone after the feed
        # was away); the coordinator and the snapshot cache register here.
        self.deletion_listeners: list[Callable[[str], None]] = []
        self._known_task_ids: Callable[[], set[str]] = set
        self._last_relay_warning = float("-inf")

    @property
    def last_seq(self) -> int:
        return 0 if self.feed is None else self.feed.delivered

    def watch_deletions(
        self, known: Callable[[], set[str]], listener: Callable[[str], None]
    ) -> None:
        """`listener` hears of every deleted task; `known` says which tasks this node
        holds, to be checked against the database after the feed reconnects."""
        self._known_task_ids = known
        self.deletion_listeners.append(listener)

    async def start(self, deliver: Deliver) -> None:
        # Events up to now are in the database: snapshots are loaded from it, and a
        # WebSocket replays them from there.
        after = await self._store.max_event_seq()
        self.feed = ClusterFeed(
            self._store.url,
            self._store,
            deliver,
            after_seq=after,
            poll_interval=self._poll_interval,
            on_deleted=self._deleted,
            on_reconnected=self._find_deleted,
        )
        self._follower = asyncio.create_task(self.feed.run(), name="cluster-feed")
        await self.feed.connected.wait()

    async def stop(self) -> None:
        await self._relay.close()
        if self._follower is not None:
            self._follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follower
            self._follower = None

    async def append(
        self, draft: Event, persist: Persist | None, progress: Progress | None
    ) -> Event:
        feed = self.feed
        assert feed is not None, "the log is not started"
        if persist is None:
            return await self._relay_progress(draft, progress or Progress())
        stored = await persist(draft)
        await feed.read_through(stored.seq)
        return stored

    async def _relay_progress(self, draft: Event, progress: Progress) -> Event:
        try:
            return await self._relay.publish(draft, progress)
        except DATABASE_ERRORS as exc:
            now = time.monotonic()
            if now - self._last_relay_warning >= _RELAY_WARNING_SECONDS:
                self._last_relay_warning = now
                log.warning("progress not relayed to the cluster: %s", exc)
            return draft

    def _deleted(self, task_id: str) -> None:
        for listener in list(self.deletion_listeners):
            try:
                listener(task_id)
            except Exception:  # one broken listener must not keep the others uninformed
                log.exception("deletion listener failed for task %s", task_id)

    async def _find_deleted(self) -> None:
        """After the feed was away: tasks deleted meanwhile were announced to nobody."""
        known = self._known_task_ids()
        if not known:
            return
        rows = await self._store.pool.fetch(
            "SELECT task_id FROM tasks WHERE task_id = ANY($1::text[])", list(known)
        )
        for task_id in known - {row["task_id"] for row in rows}:
            self._deleted(task_id)
