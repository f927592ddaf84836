"""`/api/progress/ws`: read the client's frames, authenticate, and turn each action into one
call on the socket's Listener (progress_server/listener.py, which also documents what the
server sends and in which order; progress_server/fanout.py writes the live events).

Client frames are JSON objects with an `action`: `auth`, `subscribe`, `unsubscribe`,
`ping`, `configure`. Anything wrong with a frame is answered with
`{"event": "error", "error": {"type", "message"}}` and the socket stays open; error types:
`invalid_json`, `invalid_frame` (binary, or not an object), `invalid_request` (a missing or
malformed field), `unknown_action`, `not_found` (a task that does not exist or belongs to
another key), `unauthorized`, `rate_limited`.

Limits, so no client can starve the server: a frame over 64 KiB closes the socket with
1009; frames beyond 50 a second (after a burst of 200) are not processed and answered
with `rate_limited`, and a client that keeps going anyway is closed with 1008; a socket that
has not authenticated within 30 s is closed with 1008, and so is a socket whose key is
revoked (at once: the key ring tells the hub, progress_server/fanout.py). The server pings
every 20 s and drops a peer that does not answer.
"""

from __future__ import annotations

import enum
import json
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from progress_server.appkeys import KEYRING, LOGIN_LIMITER, WS_HUB
from progress_server.auth import Principal
from progress_server.errors import ShuttingDown
from progress_server.listener import CLOSE_GRACE_SECONDS, Listener, Refused
from progress_server.web.auth import PRINCIPAL, client_address

log = logging.getLogger(__name__)

MAX_FRAME_BYTES = 64 * 1024
HEARTBEAT_SECONDS = 20.0
AUTH_TIMEOUT_SECONDS = 30.0
# The kernel's send buffer per socket: enough for a burst of frames, and a ceiling on what
# a client that stops reading can pin in the kernel on top of its bounded outbox.
SEND_BUFFER_BYTES = 64 * 1024
MAX_TASK_ID_LENGTH = 128
MAX_BATCH_MS = 60_000
MIN_BATCH_MS = 10

_CLOSING = frozenset({WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR})

Action = Callable[[web.Request, Listener, dict[str, Any]], Awaitable[None]]


class Verdict(enum.Enum):
    OK = "ok"
    DROP = "drop"
    CLOSE = "close"


class FrameLimiter:
    """A token bucket per socket, plus a second, slow one counting refused frames.

    A client over the rate gets its extra frames refused; one that keeps sending at several
    times the rate empties the second bucket too and is disconnected.
    """

    __slots__ = (
        "_at",
        "_clock",
        "_strikes",
        "_tokens",
        "burst",
        "max_strikes",
        "rate",
        "strike_recovery",
    )

    def __init__(
        self,
        rate: float = 50.0,
        burst: float = 200.0,
        strikes: float = 100.0,
        strike_recovery: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate
        self.burst = burst
        self.max_strikes = strikes
        self.strike_recovery = strike_recovery
        self._clock = clock
        self._tokens = burst
        self._strikes = 0.0
        self._at = clock()

    def check(self) -> Verdict:
        now = self._clock()
        elapsed = now - self._at
        self._at = now
        self._tokens = min(self.burst, self._tokens + elapsed * self.rate)
        self._strikes = max(0.0, self._strikes - elapsed * self.strike_recovery)
        if self._tokens >= 1:
            self._tokens -= 1
            return Verdict.OK
        self._strikes += 1
        return Verdict.CLOSE if self._strikes > self.max_strikes else Verdict.DROP


def upgrade_principal(request: web.Request) -> Principal | None:
    """Who opened the socket, as the auth middleware found it: a Bearer key, or the page's
    session cookie (web/auth.py's `authenticate_request` is the one place that decides,
    including the Origin check for cookies). None: the client must send an `auth` frame."""
    try:
        return request[PRINCIPAL]
    except KeyError:
        return None


async def progress_ws(request: web.Request) -> web.WebSocketResponse:
    hub = request.app[WS_HUB]
    if not hub.accepting:
        raise ShuttingDown()
    # Frames are small JSON; compressing each one for every client costs more CPU than the
    # bandwidth it saves on the loopback and LAN links this server lives on.
    ws = web.WebSocketResponse(
        heartbeat=HEARTBEAT_SECONDS, max_msg_size=MAX_FRAME_BYTES, compress=False
    )
    writer = await ws.prepare(request)
    transport = request.transport
    if transport is None:
        return ws  # the peer left during the handshake
    _limit_send_buffer(request)
    listener = hub.open(
        ws, transport, writer.drain, lambda: _abort(request), upgrade_principal(request)
    )
    try:
        await _serve(request, ws, listener)
    finally:
        await listener.finish()
    return ws


async def _serve(request: web.Request, ws: web.WebSocketResponse, listener: Listener) -> None:
    limiter = FrameLimiter()
    opened = time.monotonic()
    while True:
        if listener.principal is None:
            # Only an unauthenticated socket waits with a deadline; an authenticated one
            # costs nothing until the client sends a frame (the hub closes it when its key
            # is revoked).
            left = AUTH_TIMEOUT_SECONDS - (time.monotonic() - opened)
            try:
                msg = await ws.receive(timeout=max(left, 0.01))
            except TimeoutError:
                msg = None
            if time.monotonic() - opened >= AUTH_TIMEOUT_SECONDS:
                await listener.close(
                    WSCloseCode.POLICY_VIOLATION, "authenticate first", CLOSE_GRACE_SECONDS
                )
                return
            if msg is None:
                continue
        else:
            msg = await ws.receive()
        if msg.type in _CLOSING:
            return
        verdict = limiter.check()
        if verdict is Verdict.CLOSE:
            address = client_address(request)
            log.warning("WebSocket client %s sent too many frames: closing", address)
            await listener.close(
                WSCloseCode.POLICY_VIOLATION, "too many frames", CLOSE_GRACE_SECONDS
            )
            return
        try:
            if verdict is Verdict.DROP:
                raise Refused("rate_limited", "too many frames; slow down (50 a second)")
            await _act(request, listener, msg.type, msg.data)
        except Refused as refused:
            error = {"type": refused.error_type, "message": refused.message}
            listener.reply({"event": "error", "error": error})


async def _act(request: web.Request, listener: Listener, kind: WSMsgType, data: Any) -> None:
    if kind is not WSMsgType.TEXT:
        raise Refused("invalid_frame", "send JSON text frames; binary frames are not accepted")
    try:
        frame = json.loads(data)
    except ValueError as exc:
        raise Refused("invalid_json", f"the frame is not valid JSON: {exc}") from exc
    if not isinstance(frame, dict):
        raise Refused("invalid_frame", 'a frame must be a JSON object like {"action": "ping"}')
    action = frame.get("action")
    if not isinstance(action, str):
        raise Refused("invalid_request", "'action' is required and must be a string")
    handler = _ACTIONS.get(action)
    if handler is None:
        known = ", ".join(sorted(_ACTIONS))
        raise Refused("unknown_action", f"unknown action {_shown(action)}; use one of: {known}")
    if listener.principal is None and action != "auth":
        raise Refused(
            "unauthorized",
            'send {"action": "auth", "api_key": KEY} first, or connect with a Bearer header',
        )
    await handler(request, listener, frame)


async def _auth(request: web.Request, listener: Listener, frame: dict[str, Any]) -> None:
    key = frame.get("api_key")
    if not isinstance(key, str) or not key:
        raise Refused("invalid_request", "'api_key' is required and must be a string")
    if listener.principal is not None:
        raise Refused("invalid_request", "this socket is already authenticated")
    limiter = request.app[LOGIN_LIMITER]
    address = client_address(request)
    wait = limiter.retry_after(address)
    if wait > 0:
        raise Refused("rate_limited", f"too many failed logins; try again in {int(wait) + 1} s")
    found = await request.app[KEYRING].authenticate(key)
    if found is None:
        limiter.record_failure(address)
        raise Refused("unauthorized", "invalid or revoked API key")
    listener.authenticate(found)


async def _subscribe(request: web.Request, listener: Listener, frame: dict[str, Any]) -> None:
    after_seq = frame.get("after_seq")
    if after_seq is not None and (
        not isinstance(after_seq, int) or isinstance(after_seq, bool) or after_seq < 0
    ):
        raise Refused("invalid_request", "'after_seq' must be an integer >= 0")
    listener.subscribe(_target(frame), after_seq)


async def _unsubscribe(request: web.Request, listener: Listener, frame: dict[str, Any]) -> None:
    listener.unsubscribe(_target(frame))


async def _ping(request: web.Request, listener: Listener, frame: dict[str, Any]) -> None:
    listener.reply({"event": "pong"})


async def _configure(request: web.Request, listener: Listener, frame: dict[str, Any]) -> None:
    batch_ms = frame.get("batch_ms")
    if (
        not isinstance(batch_ms, int)
        or isinstance(batch_ms, bool)
        or not (batch_ms == 0 or MIN_BATCH_MS <= batch_ms <= MAX_BATCH_MS)
    ):
        raise Refused(
            "invalid_request",
            f"'batch_ms' must be 0 (no batching) or an integer from {MIN_BATCH_MS} "
            f"to {MAX_BATCH_MS}",
        )
    listener.configure(batch_ms)


_ACTIONS: dict[str, Action] = {
    "auth": _auth,
    "subscribe": _subscribe,
    "unsubscribe": _unsubscribe,
    "ping": _ping,
    "configure": _configure,
}


def _target(frame: dict[str, Any]) -> str:
    task_id = frame.get("task_id")
    if not isinstance(task_id, str) or not task_id or len(task_id) > MAX_TASK_ID_LENGTH:
        raise Refused("invalid_request", "'task_id' is required: a task id, or \"*\" for all")
    return task_id


def _shown(value: str) -> str:
    return json.dumps(value[:40] + ("..." if len(value) > 40 else ""))


def _limit_send_buffer(request: web.Request) -> None:
    transport = request.transport
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
        except OSError:
            pass  # not a TCP socket (a test transport); the outbox bound still holds


def _abort(request: web.Request) -> None:
    transport = request.transport
    if transport is not None:
        transport.abort()


async def close_sockets(app: web.Application) -> None:
    """on_shutdown: every open socket is closed with 1001 (going away)."""
    hub = app.get(WS_HUB)
    if hub is not None:
        await hub.shutdown()
