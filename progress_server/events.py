"""EventBus: hands out `seq`, persists lifecycle events before anyone hears of them, updates
the polling snapshot, then fans out to subscribers.

Subscribers are plain callables that must not block: each WebSocket puts the event in its
own bounded queue and its own sender task does the slow part, so a slow client can never
hold up the publisher.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

from progress_server.models import JSON, Event, EventName, Progress, TaskState
from progress_server.snapshots import SnapshotCache
from progress_server.store import Store

log = logging.getLogger(__name__)

Subscriber = Callable[[Event], None]
Persist = Callable[[Event], Awaitable[None]]

# seq values are reserved in the store this many at a time, so progress events (which are not
# stored one by one) still never reuse a seq after a crash.
SEQ_BLOCK = 10_000


class EventBus:
    def __init__(self, store: Store, snapshots: SnapshotCache) -> None:
        self._store = store
        self.snapshots = snapshots
        self._subscribers: list[Subscriber] = []
        # One lock orders seq assignment, persistence and delivery: subscribers see events
        # in seq order, which is what makes replay-then-live gapless.
        self._lock = asyncio.Lock()
        self._next_seq = 1
        self._reserved = 0
        self.published = 0
        self.persisted = 0

    async def start(self) -> None:
        reserved = await self._store.seq_reserved()
        stored = await self._store.max_event_seq()
        self._next_seq = max(reserved, stored) + 1
        self._reserved = self._next_seq - 1
        await self._reserve()

    async def _reserve(self) -> None:
        self._reserved = self._next_seq - 1 + SEQ_BLOCK
        await self._store.reserve_seq(self._reserved)

    @property
    def last_seq(self) -> int:
        return self._next_seq - 1

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        self._subscribers.append(subscriber)

        def unsubscribe() -> None:
            if subscriber in self._subscribers:
                self._subscribers.remove(subscriber)

        return unsubscribe

    async def publish(
        self,
        name: EventName,
        task_id: str,
        owner_key_id: int,
        state: TaskState,
        body: JSON | None = None,
        *,
        progress: Progress | None = None,
        persist: Persist | None = None,
    ) -> Event:
        """Publish one event. With `persist`, it is stored (by that callable, together with
        whatever task change it describes) before the snapshot or any subscriber sees it."""
        async with self._lock:
            if self._next_seq > self._reserved:
                await self._reserve()
            event = Event(
                seq=self._next_seq,
                name=name,
                task_id=task_id,
                owner_key_id=owner_key_id,
                state=state,
                timestamp=time.time(),
                body=body or {},
            )
            if persist is not None:
                await persist(event)
                self.persisted += 1
            self._next_seq += 1
            self._deliver(event, progress)
            return event

    def _deliver(self, event: Event, progress: Progress | None) -> None:
        current = self.snapshots.get(event.task_id)
        if progress is None:
            progress = current.progress if current else Progress()
        if current is not None or event.name is EventName.QUEUED:
            self.snapshots.update(
                event.task_id, event.owner_key_id, event.state, progress, event.timestamp
            )
        self.published += 1
        for subscriber in list(self._subscribers):
            try:
                subscriber(event)
            except Exception:  # a broken subscriber must not stop the others
                log.exception("event subscriber failed")

    async def history(
        self,
        after_seq: int,
        *,
        task_ids: Sequence[str] | None = None,
        owner_key_id: int | None = None,
        limit: int = 1000,
    ) -> list[Event]:
        """Stored events after `after_seq`, in seq order (progress ticks are not stored)."""
        return await self._store.events_after(
            after_seq, task_ids=task_ids, owner_key_id=owner_key_id, limit=limit
        )
