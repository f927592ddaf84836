"""EventBus: publishes every event through its log, which gives it a `seq`, persists lifecycle
events before anyone hears of them and brings each event back, in seq order, to update the
polling snapshot and fan out to subscribers.

The log is a seam. On SQLite (`LocalLog`) the bus hands out seqs itself and delivers each
event at once. In cluster mode (progress_server.cluster.buslog) the database gives the seq
and every node, the writer included, delivers what it reads back from the shared log.

Subscribers are plain callables that must not block: each WebSocket puts the event in its
own bounded queue and its own sender task does the slow part, so a slow client can never
hold up the publisher.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from progress_server.models import JSON, Event, EventName, Progress, TaskState
from progress_server.snapshots import SnapshotCache, outcome_of
from progress_server.store import Store

log = logging.getLogger(__name__)

Subscriber = Callable[[Event], None]
# Stores an event (with whatever task change it tells of); returns it as stored, with the
# store's seq when the store gives seqs.
Persist = Callable[[Event], Awaitable[Event]]
# How a log hands an event back to the bus: in seq order, with its progress figures if any.
Deliver = Callable[[Event, Progress | None], None]

# seq values are reserved in the store this many at a time, so progress events (which are not
# stored one by one) still never reuse a seq after a crash.
SEQ_BLOCK = 10_000


class EventLog(Protocol):
    """Where the bus's events get their seq, and how they come back to be delivered."""

    @property
    def last_seq(self) -> int:
        """The highest seq delivered: every stored event up to it is in the store."""

    async def start(self, deliver: Deliver) -> None: ...

    async def stop(self) -> None: ...

    async def append(
        self, draft: Event, persist: Persist | None, progress: Progress | None
    ) -> Event:
        """Give `draft` its seq, persist it when `persist` is given, and return it once it
        was delivered. An event not persisted comes with its progress figures and may
        return before it is delivered."""


# The states in which a task's download is whole.
_WHOLE = frozenset({TaskState.PROCESSING, TaskState.COMPLETED})


class LocalLog:
    """One process owns the log: seqs from blocks reserved in the store, each event
    delivered once it is persisted and every event before it was delivered.

    The lock orders seq assignment only. Persisting runs outside it, so the store can
    group-commit every lifecycle event of the moment (many tasks' events share a commit);
    delivery waits its turn (`_InOrder`), so subscribers still see events in seq order,
    which is what makes replay-then-live gapless. A stored event's publisher waits for its
    delivery; a progress event's does not."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._lock = asyncio.Lock()
        self._next_seq = 1
        self._reserved = 0
        self._deliver: Deliver | None = None
        self._in_order = _InOrder(1)

    @property
    def last_seq(self) -> int:
        return self._in_order.delivered

    async def start(self, deliver: Deliver) -> None:
        self._deliver = deliver
        reserved = await self._store.seq_reserved()
        stored = await self._store.max_event_seq()
        self._next_seq = max(reserved, stored) + 1
        self._in_order = _InOrder(self._next_seq)
        await self._reserve()

    async def stop(self) -> None:
        self._deliver = None

    async def _reserve(self) -> None:
        self._reserved = self._next_seq - 1 + SEQ_BLOCK
        await self._store.reserve_seq(self._reserved)

    async def append(
        self, draft: Event, persist: Persist | None, progress: Progress | None
    ) -> Event:
        deliver = self._deliver
        assert deliver is not None, "the log is not started"
        async with self._lock:
            if self._next_seq > self._reserved:
                await self._reserve()
            event = dataclasses.replace(draft, seq=self._next_seq)
            self._next_seq += 1
        if persist is None:
            # Nothing to wait for: its delivery still takes its turn after every event before
            # it, a lifecycle event being committed included, but the publisher (a
            # connection's read loop) must not wait for other tasks' commits and fsyncs.
            self._in_order.done(event.seq, lambda: deliver(event, progress))
            return event
        delivered = self._in_order.ticket(event.seq)
        try:
            stored = await persist(event)
        except BaseException:
            # Not delivered: its seq is given up and later events go on. When persisting
            # failed nothing was stored. When the caller was cancelled after its write's
            # group commit began, the write still commits: the event is in the store (a
            # replay shows it) though no subscriber heard it live. Transitions are shielded
            # from that (TaskLifecycle); a submission's insert and hook events are not.
            self._in_order.done(event.seq, None)
            raise
        self._in_order.done(stored.seq, lambda: deliver(stored, progress))
        await delivered
        return stored


class EventBus:
    def __init__(self, store: Store, snapshots: SnapshotCache, log: EventLog | None = None) -> None:
        self._store = store
        self.snapshots = snapshots
        self._log: EventLog = log or LocalLog(store)
        self._subscribers: list[Subscriber] = []
        self._own_subscribers: list[Subscriber] = []
        self.published = 0
        self.persisted = 0

    async def start(self) -> None:
        await self._log.start(self._deliver)

    async def stop(self) -> None:
        await self._log.stop()

    @property
    def last_seq(self) -> int:
        return self._log.last_seq

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Hear every event, in seq order, whichever node published it."""
        return _subscribe(self._subscribers, subscriber)

    def subscribe_own(self, subscriber: Subscriber) -> Callable[[], None]:
        """Hear the events this process published, once each publish returned: what a
        node must act on once in a cluster (hooks), or count as its own work (metrics). A
        stored event has been delivered by then; a progress event may not have been yet
        (its publisher does not wait for earlier events' commits)."""
        return _subscribe(self._own_subscribers, subscriber)

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
        timestamp: float | None = None,
    ) -> Event:
        """Publish one event. With `persist`, it is stored (by that callable, together with
        whatever task change it describes) before the snapshot or any subscriber sees it.
        `timestamp` (Unix seconds) defaults to now."""
        draft = Event(
            seq=0,
            name=name,
            task_id=task_id,
            owner_key_id=owner_key_id,
            state=state,
            timestamp=time.time() if timestamp is None else timestamp,
            body=body or {},
        )
        if progress is None and persist is None:
            # Not stored: the event travels with the figures it was published with.
            progress = self._current_progress(task_id)
        event = await self._log.append(draft, persist, progress)
        if persist is not None:
            self.persisted += 1
        for subscriber in list(self._own_subscribers):
            _tell(subscriber, event)
        return event

    def show_progress(self, task_id: str, progress: Progress) -> None:
        """Let polling and the record see `progress` now, without an event: a transfer's
        first figures, before its first progress frame is due."""
        current = self.snapshots.get(task_id)
        if current is not None:
            self.snapshots.update(
                task_id, current.owner_key_id, current.state, progress, time.time()
            )

    def _current_progress(self, task_id: str) -> Progress:
        current = self.snapshots.get(task_id)
        return current.progress if current else Progress()

    def _deliver(self, event: Event, progress: Progress | None) -> None:
        current = self.snapshots.get(event.task_id)
        if progress is None:
            progress = current.progress if current else Progress()
            if event.state in _WHOLE and progress.total_bytes is not None:
                # Processing and completed mean every byte is in. A stored event read back
                # from the cluster's log carries no figures, and the last relayed progress
                # frame may have been dropped behind it (its seq is older), so the figures
                # must not stay at that frame's.
                progress = Progress(progress.total_bytes, progress.total_bytes)
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
            _tell(subscriber, event)

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


def _subscribe(subscribers: list[Subscriber], subscriber: Subscriber) -> Callable[[], None]:
    subscribers.append(subscriber)

    def unsubscribe() -> None:
        if subscriber in subscribers:
            subscribers.remove(subscriber)

    return unsubscribe


def _tell(subscriber: Subscriber, event: Event) -> None:
    try:
        subscriber(event)
    except Exception:  # a broken subscriber must not stop the others
        log.exception("event subscriber failed")


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
