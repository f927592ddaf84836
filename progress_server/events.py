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
from progress_server.snapshots import SnapshotCache, outcome_of
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
        # The lock orders seq assignment only. Persisting runs outside it, so the store can
        # group-commit every lifecycle event of the moment; delivery waits its turn (see
        # _InOrder), so subscribers still see events in seq order, which is what makes
        # replay-then-live gapless.
        self._lock = asyncio.Lock()
        self._next_seq = 1
        self._reserved = 0
        self._in_order = _InOrder(1)
        self.published = 0
        self.persisted = 0

    async def start(self) -> None:
        reserved = await self._store.seq_reserved()
        stored = await self._store.max_event_seq()
        self._next_seq = max(reserved, stored) + 1
        self._reserved = self._next_seq - 1
        self._in_order = _InOrder(self._next_seq)
        await self._reserve()

    async def _reserve(self) -> None:
        self._reserved = self._next_seq - 1 + SEQ_BLOCK
        await self._store.reserve_seq(self._reserved)

    @property
    def last_seq(self) -> int:
        """The last seq delivered: every event up to it is stored (if it is stored at all)
        and has reached the snapshots and subscribers."""
        return self._in_order.delivered

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
        whatever task change it describes) before the snapshot or any subscriber sees it.
        Returns once it was delivered, after every event of a lower seq."""
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
            self._next_seq += 1
        delivered = self._in_order.ticket(event.seq)
        try:
            if persist is not None:
                await persist(event)
                self.persisted += 1
        except BaseException:
            # Never stored, never heard of: its seq stays unused, later events go on.
            self._in_order.done(event.seq, None)
            raise
        self._in_order.done(event.seq, lambda: self._deliver(event, progress))
        await delivered
        return event

    def show_progress(self, task_id: str, progress: Progress) -> None:
        """Let polling and the record see `progress` now, without an event: a transfer's
        first figures, before its first progress frame is due."""
        current = self.snapshots.get(task_id)
        if current is not None:
            self.snapshots.update(
                task_id, current.owner_key_id, current.state, progress, time.time()
            )

    def _deliver(self, event: Event, progress: Progress | None) -> None:
        current = self.snapshots.get(event.task_id)
        if progress is None:
            progress = current.progress if current else Progress()
        if current is not None or event.name is EventName.QUEUED:
            self.snapshots.update(
                event.task_id,
                event.owner_key_id,
                event.state,
                progress,
                event.timestamp,
                outcome_of(event.state, event.body),
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


class _InOrder:
    """Runs each seq's delivery in seq order, whenever the events before it are done (stored
    or given up), however their writes were grouped or finished."""

    def __init__(self, first: int) -> None:
        self._next = first
        self._ready: dict[int, Callable[[], None] | None] = {}
        self._waiting: dict[int, asyncio.Future[None]] = {}

    @property
    def delivered(self) -> int:
        return self._next - 1

    def ticket(self, seq: int) -> asyncio.Future[None]:
        """A future resolved once `seq` is delivered (or given up)."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiting[seq] = waiter
        return waiter

    def done(self, seq: int, deliver: Callable[[], None] | None) -> None:
        """`seq` may go: run its `deliver` (None: nothing to deliver) in its turn."""
        self._ready[seq] = deliver
        while self._next in self._ready:
            seq_now = self._next
            action = self._ready.pop(seq_now)
            self._next += 1
            try:
                if action is not None:
                    action()
            finally:
                waiter = self._waiting.pop(seq_now, None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(None)
