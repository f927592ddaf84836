"""Fan-out of bus events to WebSocket clients: the registry of open sockets and, per socket,
its subscriptions, its own bounded outbox and the sender task that writes to it.

The publisher's path (EventBus → `Hub._publish`) costs the same however many sockets are
open: each event is encoded once and appended to one shared log. Each socket's own sender
task reads the log from its own position, keeps what its key may see and its
subscriptions ask for, and does the slow part (the writes), so a client that stops reading
holds up nobody. A socket that falls more than `limit` events behind the log has what it
missed moved into its own outbox (progress_server/outbox.py), where only the newest
progress per task is kept; when lifecycle frames no longer fit there, it is closed with
1013 and comes back with `after_seq`. The log is trimmed to what the slowest open socket
still has to read, so it never holds more than about twice `limit` events.

Ordering on one socket follows `seq`. Whatever the socket sends besides live events
(answers to its actions, replay markers) goes into its outbox after the live events it had
not read yet were moved there, so nothing overtakes anything. A subscription with
`after_seq` puts a replay marker in the outbox at the moment it registers; when the sender
reaches the marker it sends the persisted events in `(after_seq, S]` from SQLite, where S
is the bus's last seq at registration, and then carries on with the log, which from there
on holds exactly the live events after S. Every persisted event ≤ S is in SQLite before
registration (the bus persists before it counts an event as published) and every event
> S reaches the log afterwards, so the replay joins the live stream with no gap and no
duplicate, however many events arrive while it runs.

Answers to `subscribe`:
- a task: `{"event": "subscribed", "task_id", "state", "progress", "timestamp", "seq"}`,
  the task's current snapshot; `seq` is the last seq the snapshot accounts for. A failed
  task's carries the record's `error`, a completed one's its `result`.
- `"*"`: the same shape with `"state": null, "progress": null`, plus `"tasks"`: one
  `{task_id, state, progress, timestamp}` per unfinished task (pending, downloading,
  processing, paused) the key may see. Finished tasks are left out so the frame stays
  small on a server with a long history; their outcome is in the history.
- With `after_seq`, the replayed events come first and the `subscribed` frame follows
  them, so `seq` never goes backwards on the wire.

In batch mode every frame the socket sends (events, and the answers to the client's own
actions) travels inside `{"event": "batch", "events": [...]}` frames, at most one per
`batch_ms`; the answer to `configure` is the last frame sent in the old mode.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from progress_server.auth import Principal
from progress_server.events import EventBus
from progress_server.models import Event, iso_utc
from progress_server.outbox import Frame, Outbox, coalesced
from progress_server.snapshots import TaskSnapshot

log = logging.getLogger(__name__)

REPLAY_PAGE = 500
# A socket being closed gets this long to take its close frame before it is cut off.
CLOSE_GRACE_SECONDS = 10.0
SHUTDOWN_GRACE_SECONDS = 3.0
# A batch stretching over more events than this is a reader that fell behind: only the
# newest progress per task goes out, so a late batch stays small.
COALESCE_OVER = 64
_BATCH_HEAD = b'{"event": "batch", "events": ['


class Refused(Exception):
    """A client action that cannot be done; answered with an `error` frame."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message).encode()


def event_frame(event: Event) -> Frame:
    return Frame(
        encode(event.to_wire()),
        seq=event.seq,
        task_id=event.task_id,
        owner=event.owner_key_id,
        progress=event.is_progress,
    )


class Hub:
    """Every open socket, and the shared log of live events they read from."""

    def __init__(self, bus: EventBus, queue_limit: int) -> None:
        self.bus = bus
        self.queue_limit = queue_limit
        self.accepting = True
        self._listeners: set[Listener] = set()
        # The log holds events [base, base + len(log)); positions are absolute.
        self._log: list[Frame] = []
        self._base = 0
        # Senders with nothing to do wait here; one publish wakes them all.
        self._idle: list[asyncio.Future[None]] = []
        # Batch senders wake on a shared grid of instants (one timer per instant, not per
        # socket), so sockets reading the same stretch of the log share one encoded batch.
        self._ticks: dict[float, list[asyncio.Future[None]]] = {}
        self._batches: dict[tuple[int, int, int | None], tuple[bytes, int, int]] = {}
        self._unsubscribe = bus.subscribe(self._publish)
        # For /metrics: event frames delivered, and frames never sent (superseded progress,
        # or a slow client's outbox dropped when it is closed with 1013).
        self.frames_sent = 0
        self.frames_dropped = 0

    def __len__(self) -> int:
        return len(self._listeners)

    @property
    def connections(self) -> int:
        return len(self._listeners)

    @property
    def queued_frames(self) -> int:
        """Frames held for sockets: every outbox, plus the shared log."""
        return len(self._log) + sum(len(listener.outbox) for listener in self._listeners)

    @property
    def end(self) -> int:
        return self._base + len(self._log)

    def since(self, position: int) -> list[Frame]:
        return self._log[position - self._base :]

    def open(self, ws: web.WebSocketResponse, abort: Callable[[], None]) -> Listener:
        listener = Listener(self, ws, abort)
        self._listeners.add(listener)
        return listener

    def forget(self, listener: Listener) -> None:
        self._listeners.discard(listener)

    def batch_tick(self, at: float) -> asyncio.Future[None]:
        """A future resolved at loop time `at` (a point on a batch grid)."""
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        waiters = self._ticks.get(at)
        if waiters is None:
            waiters = self._ticks[at] = []
            loop.call_at(at, self._fire_tick, at)
        waiters.append(waiter)
        return waiter

    def _fire_tick(self, at: float) -> None:
        for waiter in self._ticks.pop(at, ()):
            if not waiter.done():
                waiter.set_result(None)

    def batch_of(self, start: int, owner: int | None) -> tuple[bytes, int, int, int]:
        """The batch frame of log events from `start` on (all of them, or one owner's),
        its event count, how many superseded progress frames it left out, and the log end
        it reaches; built once for every socket that asks for the same stretch."""
        end = self.end
        key = (start, end, owner)
        found = self._batches.get(key)
        if found is None:
            frames = self.since(start)
            if owner is not None:
                frames = [f for f in frames if f.owner == owner]
            kept = coalesced(frames) if len(frames) > COALESCE_OVER else frames
            data = _BATCH_HEAD + b", ".join(f.data for f in kept) + b"]}"
            if len(self._batches) >= 16:
                self._batches.clear()
            found = self._batches[key] = (data, len(kept), len(frames) - len(kept))
        return found[0], found[1], found[2], end

    def wait_for_events(self) -> asyncio.Future[None]:
        waiter = asyncio.get_running_loop().create_future()
        self._idle.append(waiter)
        return waiter

    def _publish(self, event: Event) -> None:
        if not self._listeners:
            self._base += len(self._log) + 1
            self._log.clear()
            return
        self._log.append(event_frame(event))
        idle, self._idle = self._idle, []
        for waiter in idle:
            if not waiter.done():
                waiter.set_result(None)
        if len(self._log) >= 2 * self.queue_limit:
            self._trim()

    def _trim(self) -> None:
        """Move what lagging sockets missed into their outboxes, then drop what every
        socket has read."""
        lagging = self.end - self.queue_limit
        for listener in tuple(self._listeners):
            if listener.position < lagging:
                listener.catch_up()
        oldest = min((listener.position for listener in self._listeners), default=self.end)
        del self._log[: oldest - self._base]
        self._base = oldest

    def close_revoked(self, key_ids: set[int]) -> None:
        """Close, with 1008, every socket authenticated by one of these (revoked) keys."""
        for listener in tuple(self._listeners):
            who = listener.principal
            if who is not None and who.key_id in key_ids:
                listener.close_soon(WSCloseCode.POLICY_VIOLATION, "the API key was revoked")

    async def shutdown(self) -> None:
        """Close every socket with 1001 (server going away); refuse new ones."""
        self.accepting = False
        listeners = list(self._listeners)
        await asyncio.gather(
            *(
                listener.close(
                    WSCloseCode.GOING_AWAY, "server shutting down", SHUTDOWN_GRACE_SECONDS
                )
                for listener in listeners
            ),
            return_exceptions=True,
        )

    async def stop(self) -> None:
        self._unsubscribe()
        await self.shutdown()


class Listener:
    """One socket: who it is, what it follows, and the task that sends its frames."""

    def __init__(self, hub: Hub, ws: web.WebSocketResponse, abort: Callable[[], None]) -> None:
        self.hub = hub
        self.ws = ws
        self._abort = abort
        self.principal: Principal | None = None
        self.tasks: set[str] = set()
        self.everything = False
        # Where this socket is in the hub's log; everything before it was sent or moved
        # into the outbox.
        self.position = hub.end
        self.outbox = Outbox(hub.queue_limit)
        self.batch_seconds = 0.0
        # The grid instant of the last batch sent, and of the one about to go.
        self._last_batch = 0.0
        self._slot = 0.0
        self._waiter: asyncio.Future[None] | None = None
        self._closing: asyncio.Task[None] | None = None
        self._sender = asyncio.create_task(self._send_forever(), name="ws-sender")

    # -- what this socket wants from the log --------------------------------------

    def _wanted(self, frames: list[Frame]) -> list[Frame]:
        who = self.principal
        if who is None or not frames:
            return []
        if self.everything:
            if who.is_admin:
                return frames
            key_id = who.key_id
            return [f for f in frames if f.owner == key_id]
        tasks = self.tasks
        if not tasks:
            return []
        return [f for f in frames if f.task_id in tasks and who.may_see(f.owner)]

    def _read_log(self) -> list[Frame]:
        frames = self.hub.since(self.position)
        self.position = self.hub.end
        return self._wanted(frames)

    def catch_up(self) -> None:
        """Move the live events not read yet into the outbox, so what is queued next
        goes after them (and so the log can be trimmed past them)."""
        for frame in self._read_log():
            self._enqueue(frame)

    # -- the outbox: never awaits -----------------------------------------------------

    def _enqueue(self, frame: Frame) -> None:
        if self._closing is not None:
            return
        superseded = self.outbox.superseded
        if not self.outbox.put(frame):
            self.hub.frames_dropped += len(self.outbox) + 1
            self._fell_behind()
            return
        self.hub.frames_dropped += self.outbox.superseded - superseded
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _queue(self, frame: Frame) -> None:
        self.catch_up()
        self._enqueue(frame)

    def reply(self, message: dict[str, Any]) -> None:
        self._queue(Frame(encode(message)))

    def _fell_behind(self) -> None:
        log.warning(
            "WebSocket client %s fell %d frames behind: closing with 1013",
            self.principal.name if self.principal else "(anonymous)",
            self.outbox.limit,
        )
        self.hub.forget(self)
        self.outbox.clear()
        self._sender.cancel()
        self._closing = asyncio.create_task(
            self._close(
                WSCloseCode.TRY_AGAIN_LATER,
                "too far behind; reconnect and subscribe with after_seq",
                CLOSE_GRACE_SECONDS,
            ),
            name="ws-close-slow",
        )

    # -- client actions (called by the handler) -----------------------------------
    # Each one first catches up with the log under the old subscriptions, then changes
    # them, in one step with no await, so nothing slips between the snapshot, the replay
    # marker and the first live frame.

    def authenticate(self, principal: Principal) -> None:
        self.catch_up()
        self.principal = principal
        self.reply({"event": "authenticated"})

    def subscribe(self, target: str, after_seq: int | None) -> None:
        who = self._who()
        bus = self.hub.bus
        upto = bus.last_seq
        if target == "*":
            tasks = [
                _snapshot_wire(s)
                for s in bus.snapshots.values()
                if who.may_see(s.owner_key_id) and not s.state.is_final
            ]
            answer: dict[str, Any] = {
                "event": "subscribed",
                "task_id": "*",
                "state": None,
                "progress": None,
                "seq": upto,
                "tasks": tasks,
            }
            scope: dict[str, Any] = {"owner_key_id": who.owner_filter}
        else:
            snapshot = bus.snapshots.get(target)
            if snapshot is None or not who.may_see(snapshot.owner_key_id):
                raise Refused("not_found", f"no such task: {target}")
            answer = {
                "event": "subscribed",
                **_snapshot_wire(snapshot),
                **snapshot.outcome,
                "seq": upto,
            }
            scope = {"task_ids": [target]}
        self.catch_up()
        if target == "*":
            self.everything = True
        else:
            self.tasks.add(target)
        if after_seq is not None and after_seq < upto:
            self._enqueue(Frame(action=functools.partial(self._replay, after_seq, upto, scope)))
        self._enqueue(Frame(encode(answer)))

    def unsubscribe(self, target: str) -> None:
        who = self._who()
        if target != "*" and target not in self.tasks:
            snapshot = self.hub.bus.snapshots.get(target)
            if snapshot is None or not who.may_see(snapshot.owner_key_id):
                raise Refused("not_found", f"no such task: {target}")
        self.catch_up()
        if target == "*":
            self.everything = False
        else:
            self.tasks.discard(target)
        self.reply({"event": "unsubscribed", "task_id": target})

    def configure(self, batch_ms: int) -> None:
        self.reply({"event": "configured", "batch_ms": batch_ms})
        self._enqueue(Frame(action=functools.partial(self._set_batch, batch_ms / 1000)))

    def _who(self) -> Principal:
        if self.principal is None:
            raise Refused("unauthorized", "authenticate first")
        return self.principal

    # -- the sender task ------------------------------------------------------------

    async def _send_forever(self) -> None:
        try:
            while True:
                await self._wait_for_work()
                if self.batch_seconds:
                    # Let a batch gather: at most one batch frame per batch_ms.
                    await self._pace()
                    if not self.outbox and self.everything:
                        await self._send_shared_batch()
                        continue
                # The outbox holds what comes before the log's unread part; both are taken
                # before any await, so whatever is queued meanwhile comes after them.
                frames = self.outbox.take_all()
                frames += self._read_log()
                if self.batch_seconds and len(frames) > COALESCE_OVER:
                    kept = coalesced(frames)
                    self.hub.frames_dropped += len(frames) - len(kept)
                    frames = kept
                await self._send(frames)
        except ConnectionError:
            pass  # the peer went away; the handler's receive loop sees it too
        except Exception:
            log.exception("WebSocket sender failed")
            self._abort()

    async def _wait_for_work(self) -> None:
        while not self.outbox and self.position >= self.hub.end:
            self._waiter = self.hub.wait_for_events()
            try:
                await self._waiter
            finally:
                self._waiter = None

    async def _send(self, frames: Sequence[Frame]) -> None:
        pending: list[bytes] = []
        for frame in frames:
            if frame.action is not None:
                await self._flush(pending)
                pending = []
                done = frame.action()
                if asyncio.iscoroutine(done):
                    await done
            elif self.batch_seconds:
                pending.append(frame.data)
            else:
                await self.ws.send_frame(frame.data, WSMsgType.TEXT)
                self.hub.frames_sent += 1
        await self._flush(pending)

    async def _send_shared_batch(self) -> None:
        """The common case of "*" in batch mode: the batch every such socket of the same
        key (or every admin) sends for this stretch of the log, encoded once."""
        who = self.principal
        if who is None:
            self.position = self.hub.end
            return
        owner = None if who.is_admin else who.key_id
        data, count, dropped, self.position = self.hub.batch_of(self.position, owner)
        self.hub.frames_dropped += dropped
        if count:
            self._last_batch = self._slot
            await self.ws.send_frame(data, WSMsgType.TEXT)
            self.hub.frames_sent += count

    async def _flush(self, pending: list[bytes]) -> None:
        if not pending:
            return
        await self._pace()
        self._last_batch = self._slot
        await self.ws.send_frame(_BATCH_HEAD + b", ".join(pending) + b"]}", WSMsgType.TEXT)
        self.hub.frames_sent += len(pending)

    async def _pace(self) -> None:
        """Wait for the first instant of the batch grid at least batch_ms after the last
        batch: never two batches closer than batch_ms, and sockets in step with each other."""
        if not self.batch_seconds:
            return
        loop = asyncio.get_running_loop()
        step = self.batch_seconds
        # (The epsilon keeps float noise from skipping a grid point.)
        now = loop.time()
        at = math.ceil((self._last_batch + step) / step - 1e-9) * step if self._last_batch else 0
        if at > now:
            await self.hub.batch_tick(at)
            self._slot = at
        elif now - at < step:
            self._slot = at  # this batch's instant has come (or just passed): go
        else:
            # Idle for a while: go now, and count the batch at the next grid instant, so the
            # one after it is still at least batch_ms away.
            self._slot = math.ceil(now / step - 1e-9) * step

    def _set_batch(self, seconds: float) -> None:
        self.batch_seconds = seconds

    async def _replay(self, after_seq: int, upto: int, scope: dict[str, Any]) -> None:
        after = after_seq
        while after < upto:
            events = await self.hub.bus.history(after, limit=REPLAY_PAGE, **scope)
            texts = [event_frame(e).data for e in events if e.seq <= upto]
            if self.batch_seconds:
                await self._flush(texts)
            else:
                for text in texts:
                    await self.ws.send_frame(text, WSMsgType.TEXT)
            self.hub.frames_sent += len(texts)
            if len(events) < REPLAY_PAGE or len(texts) < len(events):
                return
            after = events[-1].seq

    # -- closing ----------------------------------------------------------------------

    async def close(self, code: int, message: str, grace: float) -> None:
        self.close_soon(code, message, grace)
        assert self._closing is not None
        await self._closing

    def close_soon(self, code: int, message: str, grace: float = CLOSE_GRACE_SECONDS) -> None:
        """Start closing the socket (the handler's receive loop then ends)."""
        if self._closing is None:
            self._closing = asyncio.create_task(self._close(code, message, grace))

    async def _close(self, code: int, message: str, grace: float) -> None:
        self.hub.forget(self)
        await self._stop_sender()
        try:
            await asyncio.wait_for(self.ws.close(code=code, message=message.encode()), grace)
        except (TimeoutError, ConnectionError):
            # A peer that never reads cannot take even the close frame: cut it off.
            self._abort()

    async def finish(self) -> None:
        """The handler is done with this socket: let go of everything it holds."""
        self.hub.forget(self)
        await self._stop_sender()
        if self._closing is not None:
            with contextlib.suppress(Exception):
                await self._closing

    async def _stop_sender(self) -> None:
        self._sender.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await self._sender


def _snapshot_wire(snapshot: TaskSnapshot) -> dict[str, Any]:
    return {
        "task_id": snapshot.task_id,
        "state": snapshot.state.value,
        "progress": snapshot.progress.to_wire(),
        "timestamp": iso_utc(snapshot.changed_at),
    }
