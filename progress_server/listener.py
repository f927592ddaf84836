"""One WebSocket's side of the fan-out: what it follows, its own outbox, and the sender task
that writes whatever the hub's fast path (progress_server/fanout.py) cannot.

Ordering on one socket follows `seq`. Whatever the socket sends besides live events
(answers to its actions, replay markers) goes into its outbox after the live events it had
not read yet were moved there, so nothing overtakes anything. What a subscription is
answered, and why a replay joins the live stream with no gap and no duplicate, is in
progress_server/subscriptions.py.

In batch mode every frame the socket sends (events, and the answers to the client's own
actions) travels inside `{"event": "batch", "events": [...]}` frames, at most one per
`batch_ms`; the answer to `configure` is the last frame sent in the old mode.

A socket has a sender task only while it has something of its own to send, follows single
tasks, or could not be written to at an instant of the fast path; an idle socket that
follows "*" costs a few attributes and its place in a cohort.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from aiohttp import WSCloseCode, web

from progress_server.auth import Principal
from progress_server.batchgrid import next_slot
from progress_server.outbox import COALESCE_OVER, Frame, Outbox, coalesced
from progress_server.subscriptions import replay, subscribed_answer
from progress_server.wsframes import batch_payload, encode, text_frame, text_frames

if TYPE_CHECKING:
    from progress_server.fanout import Cohort, Hub

log = logging.getLogger(__name__)

# A socket being closed gets this long to take its close frame before it is cut off.
CLOSE_GRACE_SECONDS = 10.0
# Unsent bytes a socket's transport may hold before the fast path stops writing to it
# (asyncio pauses a protocol at 64 KiB); on top of it, the kernel's send buffer.
WRITE_ROOM = 64 * 1024


class Refused(Exception):
    """A client action that cannot be done; answered with an `error` frame."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message


class Listener:
    """One socket: who it is, what it follows, and how its frames reach it."""

    __slots__ = (
        "_abort",
        "_closing",
        "_drain",
        "_outbox",
        "_principal",
        "_sender",
        "_slot",
        "_transport",
        "_waiter",
        "batch_seconds",
        "cohort",
        "everything",
        "hub",
        "last_slot",
        "owner",
        "position",
        "tasks",
        "ws",
    )

    def __init__(
        self,
        hub: Hub,
        ws: web.WebSocketResponse,
        transport: asyncio.Transport,
        drain: Callable[[], Awaitable[None]],
        abort: Callable[[], None],
    ) -> None:
        if ws.compress:
            raise ValueError("the fan-out writes uncompressed frames; open the socket so")
        self.hub = hub
        self.ws = ws
        self._transport = transport
        self._drain = drain
        self._abort = abort
        self._principal: Principal | None = None
        # The key whose events this socket may see; None: every key's (an admin), or
        # nobody's yet. Kept next to the principal because the hub reads it per instant.
        self.owner: int | None = None
        self.tasks: set[str] = set()
        self.everything = False
        # Where this socket is in the hub's log; everything before it was sent or moved
        # into the outbox.
        self.position = hub.end
        self.batch_seconds = 0.0
        # The grid instant of the last batch sent, and of the one about to go.
        self.last_slot = 0.0
        self._slot = 0.0
        self.cohort: Cohort | None = None
        self._outbox: Outbox | None = None
        self._sender: asyncio.Task[None] | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._closing: asyncio.Task[None] | None = None

    @property
    def principal(self) -> Principal | None:
        return self._principal

    @principal.setter
    def principal(self, who: Principal | None) -> None:
        self._principal = who
        self.owner = None if who is None or who.is_admin else who.key_id

    @property
    def queued(self) -> int:
        return len(self._outbox) if self._outbox is not None else 0

    # -- writing --------------------------------------------------------------------------

    def write_now(self, data: bytes, end: int, slot: float) -> bool:
        """At an instant of the fast path: write `data` (whole pre-framed frames, see
        progress_server/wsframes.py) and count the log up to `end` as sent; or, when the
        transport still holds more than WRITE_ROOM unsent bytes, move to the slow path.
        True when written."""
        transport = self._transport
        if self.ws.closed or transport.is_closing():
            self.hub.leave(self)  # the handler is finishing it
            return False
        buffered = transport.get_write_buffer_size()
        if buffered and buffered + len(data) > WRITE_ROOM:
            self.go_slow()
            return False
        transport.write(data)
        self.position = end
        self.last_slot = slot
        return True

    async def _write(self, data: bytes) -> None:
        if self.ws.closed or self._transport.is_closing():
            raise ConnectionResetError("the WebSocket is closing")
        self._transport.write(data)
        await self._drain()

    # -- what this socket wants from the log ----------------------------------------------

    def _wanted(self, frames: list[Frame]) -> list[Frame]:
        who = self.principal
        if who is None or not frames:
            return []
        if self.everything:
            owner = self.owner
            return frames if owner is None else [f for f in frames if f.owner == owner]
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

    # -- the outbox: never awaits -----------------------------------------------------------

    def _enqueue(self, frame: Frame) -> None:
        if self._closing is not None:
            return
        box = self._outbox
        if box is None:
            box = self._outbox = Outbox(self.hub.queue_limit)
        superseded = box.superseded
        if not box.put(frame):
            self.hub.frames_dropped += len(box) + 1
            self._fell_behind()
            return
        self.hub.frames_dropped += box.superseded - superseded
        self.go_slow()

    def reply(self, message: dict[str, Any]) -> None:
        self.catch_up()
        self._enqueue(Frame(encode(message)))

    def go_slow(self) -> None:
        """Leave the fast path (if on it); the sender task takes it from here."""
        self.hub.leave(self)
        if self._sender is None:
            self._sender = asyncio.create_task(self._send_forever(), name="ws-sender")
        elif self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _fell_behind(self) -> None:
        log.warning(
            "WebSocket client %s fell %d frames behind: closing with 1013",
            self.principal.name if self.principal else "(anonymous)",
            self.hub.queue_limit,
        )
        self.hub.forget(self)
        self._outbox = None
        if self._sender is not None:
            self._sender.cancel()
        self.close_soon(
            WSCloseCode.TRY_AGAIN_LATER, "too far behind; reconnect and subscribe with after_seq"
        )

    # -- client actions (called by the handler) -------------------------------------------
    # Each one first catches up with the log under the old subscriptions, then changes
    # them, in one step with no await, so nothing slips between the snapshot, the replay
    # marker and the first live frame.

    def authenticate(self, principal: Principal) -> None:
        self.catch_up()
        self.principal = principal
        self.reply({"event": "authenticated"})

    def subscribe(self, target: str, after_seq: int | None) -> None:
        upto = self.hub.bus.last_seq
        found = subscribed_answer(self.hub.bus, self._who(), target, upto)
        if found is None:
            raise Refused("not_found", f"no such task: {target}")
        answer, scope = found
        self.catch_up()
        if target == "*":
            self.everything = True
        else:
            self.tasks.add(target)
        if after_seq is not None and after_seq < upto:
            missed = functools.partial(replay, self.hub.bus, after_seq, upto, scope, self._flush)
            self._enqueue(Frame(action=missed))
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

    def _set_batch(self, seconds: float) -> None:
        self.batch_seconds = seconds

    # -- the sender task (the slow path) ----------------------------------------------------

    async def _send_forever(self) -> None:
        try:
            while await self._wait_for_work():
                if self.batch_seconds:
                    # Let a batch gather: at most one batch frame per batch_ms.
                    await self._pace()
                # The outbox holds what comes before the log's unread part; both are taken
                # before any await, so whatever is queued meanwhile comes after them.
                box = self._outbox
                frames = box.take_all() if box is not None else []
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

    async def _wait_for_work(self) -> bool:
        """True when there is something to send; False when the task is no longer needed
        (the socket joined the fast path, or follows nothing)."""
        while not self._outbox and self.position >= self.hub.end:
            if self.everything or not self.tasks:
                # Level with the log: "*" goes back to the fast path; following nothing
                # needs no task at all.
                self._outbox = self._sender = None
                if self.everything:
                    self.hub.join(self)
                return False
            self._waiter = self.hub.wait_for_events()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return True

    async def _send(self, frames: Sequence[Frame]) -> None:
        pending: list[bytes] = []
        for frame in frames:
            if frame.action is not None:
                await self._flush(pending)
                pending = []
                done = frame.action()
                if asyncio.iscoroutine(done):
                    await done
            else:
                pending.append(frame.data)
        await self._flush(pending)

    async def _flush(self, payloads: list[bytes]) -> None:
        if not payloads:
            return
        if self.batch_seconds:
            await self._pace()
            self.last_slot = self._slot
            await self._write(text_frame(batch_payload(payloads)))
        else:
            await self._write(text_frames(payloads))
        self.hub.frames_sent += len(payloads)

    async def _pace(self) -> None:
        """Wait for the first instant of the batch grid at least batch_ms after the last
        batch: at most one batch per batch_ms, and sockets in step with each other."""
        loop = asyncio.get_running_loop()
        self._slot, at = next_slot(self.last_slot, self.batch_seconds, loop.time())
        if at > loop.time():
            await self.hub.ticks.at(at)

    # -- closing ----------------------------------------------------------------------------

    def close_soon(
        self, code: int, message: str, grace: float = CLOSE_GRACE_SECONDS
    ) -> asyncio.Task[None]:
        if self._closing is None:
            self._closing = asyncio.create_task(self._close(code, message, grace))
        return self._closing

    async def close(self, code: int, message: str, grace: float) -> None:
        await self.close_soon(code, message, grace)

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
        sender = self._sender
        if sender is None or sender is asyncio.current_task():
            return
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await sender
