"""The fan-out hub: every open WebSocket, the shared log of live events they read from, and
the instants at which all sockets in step are written the same pre-framed bytes.

The publisher's path (EventBus → `Hub._publish`) costs the same however many sockets are
open: each event is encoded once and appended to one shared log, and at most one timer per
batch interval is armed. Everything a socket is sent comes from that log, from its own
position; what else a socket must send (answers to its actions, replays) waits in its own
outbox (progress_server/listener.py, which documents what a client is sent and in which
order).

The fast path. A socket that follows `"*"` and has nothing of its own to send belongs to the
cohort of its batch interval (plain mode is the cohort of interval 0). At each instant of
the cohort (a point of the batch grid, progress_server/batchgrid.py; for plain mode, the
loop turn after a publish) one callback builds the frame for each distinct content (one
per reading position and key, in practice one), frames it once as a WebSocket text frame
(progress_server/wsframes.py) and writes those bytes to every member's transport in one
pass, with no await and no task switch per socket. A member whose transport already holds
more than `WRITE_ROOM` unsent bytes is not written to: it leaves the cohort for the slow
path, where its own sender task waits for the transport to drain, catches up from its
position and rejoins the cohort once it is level again.

A socket that falls more than `queue_limit` events behind the log has what it missed moved
into its outbox, where only the newest progress per task is kept; when lifecycle frames no
longer fit there, it is closed with 1013 and comes back with `after_seq`. The log is
trimmed to what the slowest open socket still has to read, so it never holds more than
about twice `queue_limit` events.

The hub also closes, with 1008, the sockets of a revoked key: all of them in one pass the
moment the key ring finds the key gone (it looks before every request and 50 times a second,
progress_server/auth.py), and a socket that opens with a key revoked while its handshake ran.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import WSCloseCode, web

from progress_server.auth import KeyRing, Principal
from progress_server.batchgrid import Ticks, may_send, next_slot
from progress_server.events import EventBus
from progress_server.listener import Listener
from progress_server.models import Event
from progress_server.outbox import COALESCE_OVER, Frame, coalesced
from progress_server.wsframes import batch_payload, event_frame, text_frame, text_frames

SHUTDOWN_GRACE_SECONDS = 3.0


class Cohort:
    """The sockets that follow "*" with one batch interval and have nothing of their own to
    send: at each of its instants, all of them are written at once."""

    __slots__ = ("members", "next", "slot", "step", "timer")

    def __init__(self, step: float) -> None:
        self.step = step
        # A dict as an ordered set: the members are written in the order they joined.
        self.members: dict[Listener, None] = {}
        self.timer: asyncio.TimerHandle | asyncio.Handle | None = None
        # The grid instant of the last batch, and of the one the timer is armed for.
        self.slot = 0.0
        self.next = 0.0


class Hub:
    """Every open socket, the shared log of live events, and the cohorts of the fast path."""

    def __init__(self, bus: EventBus, queue_limit: int) -> None:
        self.bus = bus
        self.queue_limit = queue_limit
        self.accepting = True
        self.ticks = Ticks()
        self._listeners: set[Listener] = set()
        # The log holds events [base, base + len(log)); positions are absolute.
        self._log: list[Frame] = []
        self._base = 0
        # Slow-path senders with nothing to do wait here; one publish wakes them all.
        self._idle: list[asyncio.Future[None]] = []
        self._cohorts: dict[float, Cohort] = {}
        self._keyring: KeyRing | None = None
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
        return len(self._log) + sum(listener.queued for listener in self._listeners)

    @property
    def end(self) -> int:
        return self._base + len(self._log)

    def since(self, position: int) -> list[Frame]:
        return self._log[position - self._base :]

    # -- the registry ---------------------------------------------------------------------

    def open(
        self,
        ws: web.WebSocketResponse,
        transport: asyncio.Transport,
        drain: Callable[[], Awaitable[None]],
        abort: Callable[[], None],
        principal: Principal | None = None,
    ) -> Listener:
        """Register a socket; `principal` is who its upgrade request authenticated as."""
        listener = Listener(self, ws, transport, drain, abort)
        self._listeners.add(listener)
        listener.principal = principal
        keyring = self._keyring
        if principal is not None and keyring is not None:
            # The key ring may have dropped the key while the handshake ran, after the
            # request was authenticated, and told the hub before this socket was here.
            if keyring.principal_by_id(principal.key_id) is None:
                self._close_revoked({principal.key_id})
        return listener

    def forget(self, listener: Listener) -> None:
        self._listeners.discard(listener)
        self.leave(listener)

    def watch_keys(self, keyring: KeyRing) -> None:
        """Close the sockets of every key `keyring` finds revoked, the moment it does."""
        self._keyring = keyring
        keyring.revoked_listeners.append(self._close_revoked)

    def _close_revoked(self, key_ids: set[int]) -> None:
        for listener in tuple(self._listeners):
            who = listener.principal
            if who is not None and who.key_id in key_ids:
                listener.close_soon(WSCloseCode.POLICY_VIOLATION, "the API key was revoked")

    # -- the cohorts of the fast path -------------------------------------------------------

    def join(self, listener: Listener) -> None:
        """A socket level with the log, following "*", with nothing queued of its own."""
        step = listener.batch_seconds
        cohort = self._cohorts.get(step)
        if cohort is None:
            cohort = self._cohorts[step] = Cohort(step)
        cohort.members[listener] = None
        listener.cohort = cohort

    def leave(self, listener: Listener) -> None:
        cohort = listener.cohort
        if cohort is not None:
            listener.cohort = None
            cohort.members.pop(listener, None)
            if not cohort.members:
                if cohort.timer is not None:
                    cohort.timer.cancel()
                del self._cohorts[cohort.step]

    def _arm(self, cohort: Cohort) -> None:
        loop = asyncio.get_running_loop()
        if not cohort.step:
            cohort.timer = loop.call_soon(self._instant, cohort)
            return
        cohort.next, at = next_slot(cohort.slot, cohort.step, loop.time())
        cohort.timer = loop.call_at(at, self._instant, cohort)

    def _instant(self, cohort: Cohort) -> None:
        """Write what each member has not read yet, framed once per distinct content.

        Two passes: the first builds every content and the list of sockets due, the second
        only writes. The second allocates no object the garbage collector tracks, so a
        collection (which any such allocation may start, and which takes 100 ms and more
        on a busy server with many sockets) never falls between two sockets of an instant:
        it delays the instant as a whole instead of splitting it."""
        cohort.timer = None
        step = cohort.step
        slot = cohort.next
        if step:
            cohort.slot = slot
        end = self.end
        # Per owner (None: everything), per reading position: bytes, events, left out.
        contents: dict[int | None, dict[int, tuple[bytes, int, int]]] = {}
        due: list[Listener] = []
        postponed = False
        for listener in tuple(cohort.members):
            position = listener.position
            if position >= end:
                continue
            if step and not may_send(listener.last_slot, step, slot):
                postponed = True  # it sent a batch of its own at this instant
                continue
            owner = listener.owner
            by_position = contents.get(owner)
            if by_position is None:
                by_position = contents[owner] = {}
            if position not in by_position:
                by_position[position] = self._content(position, owner, step)
            due.append(listener)
        for listener in due:
            data, count, dropped = contents[listener.owner][listener.position]
            if not count:
                listener.position = end
            elif listener.write_now(data, end, slot):
                self.frames_sent += count
                self.frames_dropped += dropped
        if postponed and cohort.members:
            self._arm(cohort)

    def _content(self, position: int, owner: int | None, step: float) -> tuple[bytes, int, int]:
        """The bytes for a reader at `position` (all events, or one owner's), how many
        events they carry, and how many superseded progress frames they leave out."""
        frames = self.since(position)
        if owner is not None:
            frames = [f for f in frames if f.owner == owner]
        if not frames:
            return b"", 0, 0
        if not step:
            return text_frames(f.data for f in frames), len(frames), 0
        kept = coalesced(frames) if len(frames) > COALESCE_OVER else frames
        data = text_frame(batch_payload(f.data for f in kept))
        return data, len(kept), len(frames) - len(kept)

    # -- the log ----------------------------------------------------------------------------

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
        for cohort in self._cohorts.values():
            if cohort.timer is None:
                self._arm(cohort)
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

    # -- stopping ---------------------------------------------------------------------------

    async def shutdown(self) -> None:
        """Close every socket with 1001 (server going away); refuse new ones."""
        self.accepting = False
        await asyncio.gather(
            *(
                listener.close(
                    WSCloseCode.GOING_AWAY, "server shutting down", SHUTDOWN_GRACE_SECONDS
                )
                for listener in list(self._listeners)
            ),
            return_exceptions=True,
        )

    async def stop(self) -> None:
        self._unsubscribe()
        await self.shutdown()
