"""Live events over the WebSocket, reconnecting and resuming with `after_seq` by itself."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Self, cast

import aiohttp

from progress_server.client.errors import ApiError, ServerUnreachable, SubscriptionError
from progress_server.client.records import Event

log = logging.getLogger("progress_server.client")

# Close codes after which coming back cannot help: the key or the frames were refused.
_FATAL_CLOSE_CODES = frozenset({1002, 1003, 1007, 1008, 1009, 1010})
_BACKOFF_START = 0.2
_BACKOFF_MAX = 5.0


@dataclass(eq=False)
class Subscription:
    """An async iterator of events over one WebSocket that reconnects by itself.

    Made by `ProgressClient.subscribe`; see there for what each option does. Also an async
    context manager that closes the socket on exit.
    """

    session: Callable[[], aiohttp.ClientSession]
    ws_url: str
    targets: list[str]
    after_seq: int | None = None
    batch_ms: int | None = None
    reconnect: bool = True
    give_up_after: float | None = None
    on_reconnecting: Callable[[str], None] | None = None

    def __post_init__(self) -> None:
        # Where each subscription resumes after a reconnect.
        self._resume_at: dict[str, int] = (
            {} if self.after_seq is None else dict.fromkeys(self.targets, self.after_seq)
        )
        # The newest seq delivered per task: replays after a reconnect can overlap what was
        # already seen, and several subscriptions can carry the same task.
        self._last_seq: dict[str, int] = {}
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._pending: deque[Event] = deque()
        self._closed = False
        self._connected_once = False
        self.reconnects = 0
        """How many times the connection was re-established."""

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Event:
        while not self._pending:
            if self._closed:
                raise StopAsyncIteration
            frame = await self._receive()
            if frame is None:
                raise StopAsyncIteration
            self._accept(frame)
        return self._pending.popleft()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the socket; iteration ends."""
        self._closed = True
        await self._drop()

    @property
    def last_seq(self) -> int | None:
        """The highest `seq` delivered so far (None before the first event)."""
        return max(self._last_seq.values(), default=None)

    def _accept(self, frame: dict[str, Any]) -> None:
        kind = frame.get("event")
        if kind == "batch":
            for inner in frame.get("events", []):
                if isinstance(inner, dict):
                    self._accept(inner)
        elif kind == "error":
            error = frame.get("error") or {}
            raise SubscriptionError(
                str(error.get("type", "error")), str(error.get("message", "refused"))
            )
        elif kind == "subscribed":
            target = str(frame.get("task_id"))
            seq = frame.get("seq")
            if target in self.targets and target not in self._resume_at and isinstance(seq, int):
                self._resume_at[target] = seq
            self._pending.append(cast(Event, frame))
        elif isinstance(kind, str) and kind.startswith("download."):
            self._deliver(cast(Event, frame))
        # pong and unsubscribed frames carry nothing for the reader.

    def _deliver(self, event: Event) -> None:
        task_id, seq = event.get("task_id"), event.get("seq")
        if task_id is None or not isinstance(seq, int):
            self._pending.append(event)
            return
        if seq <= self._last_seq.get(task_id, 0):
            return
        self._last_seq[task_id] = seq
        for target in ("*", task_id):
            if target in self.targets:
                self._resume_at[target] = max(self._resume_at.get(target, 0), seq)
        self._pending.append(event)

    async def _receive(self) -> dict[str, Any] | None:
        """The next JSON frame, reconnecting as needed; None once closed."""
        while not self._closed:
            if self._ws is None:
                await self._connect()
                continue
            msg = await self._ws.receive()
            if msg.type is aiohttp.WSMsgType.TEXT:
                try:
                    frame = json.loads(msg.data)
                except ValueError:
                    continue
                if isinstance(frame, dict):
                    return frame
                continue
            if msg.type is aiohttp.WSMsgType.BINARY:
                continue
            code = self._ws.close_code
            await self._drop()
            if self._closed:
                return None
            if code == 1000:
                return None
            if code in _FATAL_CLOSE_CODES:
                raise SubscriptionError("closed", f"the server closed the socket ({code})")
            if not self.reconnect:
                raise ServerUnreachable(f"the WebSocket closed ({code})")
            self._notify(f"connection closed ({code})")
        return None

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        delay = _BACKOFF_START
        while not self._closed:
            try:
                self._ws = await self._open()
                return
            except aiohttp.WSServerHandshakeError as exc:
                if exc.status in (401, 403, 404):
                    raise ApiError(exc.status, "websocket_refused", exc.message) from exc
                reason = f"handshake failed (HTTP {exc.status})"
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                reason = f"cannot connect: {exc or type(exc).__name__}"
            if not self.reconnect:
                raise ServerUnreachable(f"{self.ws_url}: {reason}")
            if self.give_up_after is not None and loop.time() - started > self.give_up_after:
                raise ServerUnreachable(f"gave up reconnecting to {self.ws_url}: {reason}")
            self._notify(reason)
            await asyncio.sleep(delay)
            delay = min(delay * 2, _BACKOFF_MAX)

    async def _open(self) -> aiohttp.ClientWebSocketResponse:
        ws = await self.session().ws_connect(
            self.ws_url, heartbeat=20.0, timeout=aiohttp.ClientWSTimeout(ws_close=5.0)
        )
        try:
            if self.batch_ms is not None:
                await ws.send_json({"action": "configure", "batch_ms": self.batch_ms})
            for target in self.targets:
                frame: dict[str, Any] = {"action": "subscribe", "task_id": target}
                if target in self._resume_at:
                    frame["after_seq"] = self._resume_at[target]
                await ws.send_json(frame)
        except BaseException:
            await ws.close()
            raise
        if self._connected_once:
            self.reconnects += 1
        self._connected_once = True
        return ws

    def _notify(self, reason: str) -> None:
        log.info("progress-server WebSocket: %s; reconnecting", reason)
        if self.on_reconnecting is not None:
            self.on_reconnecting(reason)

    async def _drop(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None and not ws.closed:
            with contextlib.suppress(Exception):
                await ws.close()
