"""Fan-out of bus events to WebSocket clients: the registry of open sockets and, per socket,
its subscriptions, its bounded outbox and the sender task that drains it.

The publisher's path (EventBus → `Hub._publish` → `Listener.offer`) never awaits a socket:
it encodes each event once and drops the shared frame into every interested socket's
outbox. Each socket's own sender task does the slow part, so a client that stops reading
only ever fills its own outbox, and is closed with 1013 when lifecycle frames no longer fit.

Ordering on one socket follows `seq`. A subscription with `after_seq` puts a replay marker
in the outbox at the moment it registers; when the sender reaches the marker it sends the
persisted events in `(after_seq, S]` from SQLite, where S is the bus's last seq at
registration, and then carries on with the outbox, which holds exactly the live events
after S. Every persisted event ≤ S is in SQLite before registration (the bus persists
before it counts an event as published) and every event > S is delivered to the outbox,
so the replay joins the live stream with no gap and no duplicate, however many events
arrive while it runs.

Answers to `subscribe`:
- a task: `{"event": "subscribed", "task_id", "state", "progress", "timestamp", "seq"}`,
  the task's current snapshot; `seq` is the last seq the snapshot accounts for.
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
import time
from collections.abc import Callable, Sequence
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from progress_server.auth import Principal
from progress_server.events import EventBus
from progress_server.models import Event, iso_utc
from progress_server.outbox import Frame, Outbox
from progress_server.snapshots import TaskSnapshot

log = logging.getLogger(__name__)

REPLAY_PAGE = 500
# A socket being closed gets this long to take its close frame before it is cut off.
CLOSE_GRACE_SECONDS = 10.0
SHUTDOWN_GRACE_SECONDS = 3.0
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
        progress=event.is_progress,
        is_event=True,
    )


class Hub:
    """Every open socket; subscribed to the bus once for all of them."""

    def __init__(self, bus: EventBus, queue_limit: int) -> None:
        self.bus = bus
        self.queue_limit = queue_limit
        self.accepting = True
        self._listeners: set[Listener] = set()
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
        return sum(len(listener.outbox) for listener in self._listeners)

    def open(self, ws: web.WebSocketResponse, abort: Callable[[], None]) -> Listener:
        listener = Listener(self, ws, abort)
        self._listeners.add(listener)
        return listener

    def forget(self, listener: Listener) -> None:
        self._listeners.discard(listener)

    def _publish(self, event: Event) -> None:
        frame: Frame | None = None
        for listener in tuple(self._listeners):
            if listener.wants(event):
                if frame is None:
                    frame = event_frame(event)
                listener.offer(frame)

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
        self.outbox = Outbox(hub.queue_limit)
        self.batch_seconds = 0.0
        self._last_batch = float("-inf")
        self._closing: asyncio.Task[None] | None = None
        self._sender = asyncio.create_task(self._send_forever(), name="ws-sender")

    # -- the publisher's side: never awaits -----------------------------------------

    def wants(self, event: Event) -> bool:
        if not self.everything and event.task_id not in self.tasks:
            return False
        who = self.principal
        return who is not None and who.may_see(event.owner_key_id)

    def offer(self, frame: Frame) -> None:
        if self._closing is not None:
            return
        superseded = self.outbox.superseded
        if not self.outbox.put(frame):
            self.hub.frames_dropped += len(self.outbox) + 1
            self._fell_behind()
        self.hub.frames_dropped += self.outbox.superseded - superseded

    def reply(self, message: dict[str, Any]) -> None:
        self.offer(Frame(encode(message)))

    def _fell_behind(self) -> None:
        log.warning(
            "WebSocket client %s fell %d frames behind: closing with 1013",
            self.principal.name if self.principal else "(anonymous)",
            self.outbox.limit,
        )
        self.outbox.clear()
        self._closing = asyncio.create_task(
            self._close(
                WSCloseCode.TRY_AGAIN_LATER,
                "too far behind; reconnect and subscribe with after_seq",
                CLOSE_GRACE_SECONDS,
            ),
            name="ws-close-slow",
        )

    # -- client actions (called by the handler) -----------------------------------

    def subscribe(self, target: str, after_seq: int | None) -> None:
        """Follow a task or "*"; all in one step with no await, so nothing slips between
        the snapshot, the replay marker and the first live frame."""
        who = self._who()
        bus = self.hub.bus
        upto = bus.last_seq
        if target == "*":
            self.everything = True
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
            self.tasks.add(target)
            answer = {"event": "subscribed", **_snapshot_wire(snapshot), "seq": upto}
            scope = {"task_ids": [target]}
        if after_seq is not None and after_seq < upto:
            replay = functools.partial(self._replay, after_seq, upto, scope)
            self.offer(Frame(action=replay))
        self.reply(answer)

    def unsubscribe(self, target: str) -> None:
        who = self._who()
        if target == "*":
            self.everything = False
        elif target in self.tasks:
            self.tasks.discard(target)
        else:
            snapshot = self.hub.bus.snapshots.get(target)
            if snapshot is None or not who.may_see(snapshot.owner_key_id):
                raise Refused("not_found", f"no such task: {target}")
        self.reply({"event": "unsubscribed", "task_id": target})

    def configure(self, batch_ms: int) -> None:
        self.reply({"event": "configured", "batch_ms": batch_ms})
        self.offer(Frame(action=functools.partial(self._set_batch, batch_ms / 1000)))

    def _who(self) -> Principal:
        if self.principal is None:
            raise Refused("unauthorized", "authenticate first")
        return self.principal

    # -- the sender task ------------------------------------------------------------

    async def _send_forever(self) -> None:
        try:
            while True:
                await self.outbox.wait()
                if self.batch_seconds:
                    # Let a batch gather: at most one batch frame per batch_ms.
                    await self._pace()
                await self._send(self.outbox.take_all())
        except ConnectionError:
            pass  # the peer went away; the handler's receive loop sees it too
        except Exception:
            log.exception("WebSocket sender failed")
            self._abort()

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

    async def _flush(self, pending: list[bytes]) -> None:
        if not pending:
            return
        await self._pace()
        self._last_batch = time.monotonic()
        await self.ws.send_frame(_BATCH_HEAD + b", ".join(pending) + b"]}", WSMsgType.TEXT)
        self.hub.frames_sent += len(pending)

    async def _pace(self) -> None:
        wait = self._last_batch + self.batch_seconds - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)

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
            if len(events) < REPLAY_PAGE or len(texts) < len(events):
                return
            after = events[-1].seq

    # -- closing ----------------------------------------------------------------------

    async def close(self, code: int, message: str, grace: float) -> None:
        if self._closing is None:
            self._closing = asyncio.create_task(self._close(code, message, grace))
        await self._closing

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
