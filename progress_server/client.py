"""The Python client for progress-server: the documented way to use it from Python.

Everything is async and built on aiohttp (already a dependency of the server)::

    import asyncio
    from progress_server.client import ProgressClient

    async def main() -> None:
        async with ProgressClient("http://127.0.0.1:8000", "psk_...") as client:
            task = await client.create("https://example.com/video.mp4")
            async for event in client.subscribe([task["task_id"]]):
                print(event["event"], event.get("progress"))
                if event.get("state") in ("completed", "failed", "cancelled"):
                    break
            # Or, without looking at each event:
            [done] = await client.wait([task["task_id"]])
            if done["state"] == "completed":
                await client.save_file(done["task_id"], ".")

    asyncio.run(main())

Records and events are the server's JSON exactly as it sends them (plain dicts, typed with
`TypedDict` for editors and mypy); nothing is renamed or dropped, so `json.dumps` of a
record is the same record `GET /api/downloads/{id}` returns.

Failures raise `ProgressClientError` subclasses: `ApiError` for an error answer of the
server (with its `status`, `type` and `message`), `ServerUnreachable` when no answer came.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import json
import logging
import os
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, NotRequired, Self, TypedDict, cast

import aiohttp

log = logging.getLogger(__name__)

FINAL_STATES = frozenset({"completed", "failed", "cancelled"})
"""States a task leaves only through an explicit `retry`."""


class ProgressInfo(TypedDict):
    """The guide's progress figures. `total_bytes`, `percentage` and `eta_seconds` are
    None while the size is unknown; `speed_mbps` is decimal megabytes per second."""

    percentage: float | None
    downloaded_bytes: int
    total_bytes: int | None
    speed_mbps: float
    eta_seconds: int | None


class TaskError(TypedDict):
    type: str
    message: str


class TaskResult(TypedDict):
    filename: str
    size_mb: float
    duration_seconds: int | None


class TaskRecord(TypedDict):
    """One download task, as `GET /api/downloads/{id}` returns it."""

    task_id: str
    url: str
    filename: str | None
    state: str
    progress: ProgressInfo
    result: TaskResult | None
    error: TaskError | None
    created_at: str
    updated_at: str
    sha256: NotRequired[str]
    options: NotRequired[dict[str, Any]]


class Event(TypedDict, total=False):
    """A frame from the WebSocket or a history entry.

    `event` names it: `download.queued`, `.started`, `.progress`, `.processing`,
    `.completed`, `.error`, `.cancelled`, `.paused`, or `subscribed` (the current snapshot
    of a task, sent when a subscription starts; for `"*"` it carries `tasks`, a snapshot of
    every unfinished task). Which of the other keys are present depends on the event, as in
    the guide.
    """

    event: str
    task_id: str
    seq: int
    state: str
    timestamp: str
    progress: ProgressInfo
    result: TaskResult
    error: TaskError
    processing: dict[str, Any]
    tasks: list[dict[str, Any]]


class ProgressClientError(Exception):
    """Anything that went wrong talking to the server."""


class ServerUnreachable(ProgressClientError):
    """No answer: the server is down, the address is wrong, or the connection broke."""


class ApiError(ProgressClientError):
    """The server answered with an error: `{"error": {"type", "message"}}`."""

    def __init__(self, status: int, error_type: str, message: str) -> None:
        super().__init__(f"{message} ({error_type}, HTTP {status})")
        self.status = status
        self.type = error_type
        self.message = message


class SubscriptionError(ProgressClientError):
    """The WebSocket refused a subscription (an `error` frame), e.g. an unknown task."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(f"{message} ({error_type})")
        self.type = error_type
        self.message = message


class ProgressClient:
    """A connection to one progress-server with one API key.

    Use it as an async context manager (or call `close()`); it opens one aiohttp session
    lazily, on the first request. `server_url` may include a path prefix when the server
    sits behind a reverse proxy (`https://example.com/downloads`).
    """

    def __init__(self, server_url: str, api_key: str, *, timeout: float = 30.0) -> None:
        self.server_url = server_url.rstrip("/")
        self._api_key = api_key
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                headers={"Authorization": f"Bearer {self._api_key}"},
                timeout=self._timeout,
            )
        return self._session

    # ----------------------------------------------------------------------------------
    # Tasks
    # ----------------------------------------------------------------------------------

    async def create(
        self,
        url: str,
        *,
        filename: str | None = None,
        sha256: str | None = None,
        preset: str | None = None,
        max_speed_mbps: float | None = None,
        idempotency_key: str | None = None,
    ) -> TaskRecord:
        """Submit a download and return its record (state `pending`).

        `filename` must be a plain name (no folders); `sha256` is checked once the file is
        complete; `preset` asks for a transcode after the download (e.g. `mp4`, `mp3`,
        `remux-mp4`); the same `idempotency_key` within 24 h returns the first task.
        """
        body: dict[str, Any] = {"url": url}
        if filename is not None:
            body["filename"] = filename
        if sha256 is not None:
            body["sha256"] = sha256
        if preset is not None:
            body["post_process"] = {"transcode": preset}
        if max_speed_mbps is not None:
            body["max_speed_mbps"] = max_speed_mbps
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return cast(
            TaskRecord, await self._request("POST", "/api/downloads", json=body, headers=headers)
        )

    async def get(self, task_id: str) -> TaskRecord:
        """The task's current record. An unknown task (or another key's) raises ApiError 404."""
        return cast(TaskRecord, await self._request("GET", f"/api/downloads/{task_id}"))

    async def iter_tasks(
        self, state: str | Iterable[str] | None = None, *, page_size: int = 200
    ) -> AsyncIterator[TaskRecord]:
        """Every task this key may see, oldest first, fetched page by page."""
        params: list[tuple[str, str]] = [("limit", str(page_size))]
        if state is not None:
            states = [state] if isinstance(state, str) else list(state)
            params.append(("state", ",".join(states)))
        cursor: str | None = None
        while True:
            page_params = params + ([("cursor", cursor)] if cursor else [])
            page = await self._request("GET", "/api/downloads", params=page_params)
            for task in page["tasks"]:
                yield cast(TaskRecord, task)
            cursor = page.get("next_cursor")
            if not cursor:
                return

    async def list(
        self, state: str | Iterable[str] | None = None, *, page_size: int = 200
    ) -> builtins.list[TaskRecord]:
        """All tasks this key may see (following `next_cursor`), optionally of some states."""
        return [task async for task in self.iter_tasks(state, page_size=page_size)]

    async def pause(self, task_id: str) -> TaskRecord:
        """Stop a running or pending task, keeping its partial file."""
        return await self._act(task_id, "pause")

    async def resume(self, task_id: str) -> TaskRecord:
        """Continue a paused task from its partial file."""
        return await self._act(task_id, "resume")

    async def cancel(self, task_id: str) -> TaskRecord:
        """Cancel a task (ApiError 409 once it is completed)."""
        return await self._act(task_id, "cancel")

    async def retry(self, task_id: str) -> TaskRecord:
        """Send a failed or cancelled task back to `pending`, resuming where it can."""
        return await self._act(task_id, "retry")

    async def delete(self, task_id: str, *, delete_file: bool = False) -> None:
        """Forget a task; with `delete_file` its downloaded file is removed as well."""
        params = {"delete_file": "true"} if delete_file else None
        await self._request("DELETE", f"/api/downloads/{task_id}", params=params)

    async def events(self, task_id: str | None = None, after_seq: int = 0) -> builtins.list[Event]:
        """The persisted event history after `after_seq`, of one task or of all tasks this
        key may see, in `seq` order (intermediate progress is not kept in history)."""
        path = f"/api/downloads/{task_id}/events" if task_id else "/api/events"
        collected: builtins.list[Event] = []
        limit = 1000
        while True:
            params = {"after_seq": str(after_seq), "limit": str(limit)}
            page = cast(
                builtins.list[Event], (await self._request("GET", path, params=params))["events"]
            )
            collected.extend(page)
            if len(page) < limit:
                return collected
            after_seq = page[-1]["seq"]

    async def save_file(self, task_id: str, path: str | os.PathLike[str]) -> Path:
        """Download a completed task's file from the server to `path` (a file name, or an
        existing folder to save it in under the task's file name). Returns where it went."""
        target = Path(path)
        try:
            async with self.session.get(
                f"{self.server_url}/api/downloads/{task_id}/file",
                timeout=aiohttp.ClientTimeout(total=None, sock_read=self._timeout.total),
            ) as resp:
                if resp.status >= 400:
                    raise _api_error(resp.status, await resp.text())
                if target.is_dir():
                    target = target / ((await self.get(task_id))["filename"] or task_id)
                partial = target.with_name(target.name + ".part")
                with partial.open("wb") as out:
                    async for chunk in resp.content.iter_chunked(256 * 1024):
                        await asyncio.to_thread(out.write, chunk)
                partial.replace(target)
        except aiohttp.ClientError as exc:
            raise ServerUnreachable(f"cannot reach {self.server_url}: {exc}") from exc
        return target

    async def wait(self, task_ids: Iterable[str]) -> builtins.list[TaskRecord]:
        """Wait until every task is completed, failed or cancelled (following them over
        the WebSocket) and return their final records, in the order given. Paused tasks
        are waited for too; bound the wait with `asyncio.timeout(...)` if you need to."""
        wanted = list(dict.fromkeys(task_ids))
        pending = {t for t in wanted if (await self.get(t))["state"] not in FINAL_STATES}

        async def follow() -> None:
            async with self.subscribe(pending) as events:
                async for event in events:
                    if event.get("state") in FINAL_STATES:
                        pending.discard(event.get("task_id", ""))
                    if not pending:
                        return

        if pending:
            await follow()
        return [await self.get(t) for t in wanted]

    async def _act(self, task_id: str, action: str) -> TaskRecord:
        return cast(TaskRecord, await self._request("POST", f"/api/downloads/{task_id}/{action}"))

    async def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            async with self.session.request(method, self.server_url + path, **kwargs) as resp:
                text = await resp.text()
                if resp.status >= 400:
                    raise _api_error(resp.status, text)
                return json.loads(text) if text else None
        except aiohttp.ClientError as exc:
            raise ServerUnreachable(f"cannot reach {self.server_url}: {exc}") from exc
        except TimeoutError as exc:
            raise ServerUnreachable(f"{self.server_url} did not answer in time") from exc

    # ----------------------------------------------------------------------------------
    # Live events
    # ----------------------------------------------------------------------------------

    def subscribe(
        self,
        task_ids: Iterable[str] | Literal["*"],
        *,
        after_seq: int | None = None,
        batch_ms: int | None = None,
        reconnect: bool = True,
        give_up_after: float | None = None,
        on_reconnecting: Callable[[str], None] | None = None,
    ) -> Subscription:
        """Follow tasks live over the WebSocket: `async for event in client.subscribe(...)`.

        `task_ids` is a list of task ids, or `"*"` for every task this key may see (new ones
        included). With `after_seq`, the server first replays the persisted events after
        that `seq`, then goes live, with no gap.

        When the connection drops (server restart, network trouble, or a 1013 close because
        this reader fell behind), the subscription reconnects with backoff and resubscribes
        with `after_seq` set to the last event it delivered, so no lifecycle event is lost
        and none is delivered twice. Missed intermediate progress is not replayed (it is not
        kept); the `subscribed` frame sent on every (re)connect carries the current figures.
        `reconnect=False` raises `ServerUnreachable` instead; `give_up_after` seconds of
        failed reconnecting also raise it; `on_reconnecting(reason)` is called before each
        reconnect attempt.

        The iterator never ends by itself while the server is up: `break` out of the loop,
        or use `async with client.subscribe(...) as events:` to close the socket at once.
        """
        targets = ["*"] if task_ids == "*" else list(dict.fromkeys(task_ids))
        if not targets:
            raise ValueError("subscribe to at least one task id, or '*'")
        return Subscription(
            self,
            targets,
            after_seq=after_seq,
            batch_ms=batch_ms,
            reconnect=reconnect,
            give_up_after=give_up_after,
            on_reconnecting=on_reconnecting,
        )

    @property
    def ws_url(self) -> str:
        base = self.server_url
        if base.startswith("https://"):
            base = "wss://" + base.removeprefix("https://")
        elif base.startswith("http://"):
            base = "ws://" + base.removeprefix("http://")
        return base + "/api/progress/ws"


def _api_error(status: int, text: str) -> ApiError:
    try:
        error = json.loads(text)["error"]
        return ApiError(status, str(error["type"]), str(error["message"]))
    except (ValueError, KeyError, TypeError):
        return ApiError(status, "http_error", text.strip()[:200] or f"HTTP {status}")


# Close codes after which coming back cannot help: the key or the frames were refused.
_FATAL_CLOSE_CODES = frozenset({1002, 1003, 1007, 1008, 1009, 1010})
_BACKOFF_START = 0.2
_BACKOFF_MAX = 5.0


class Subscription:
    """An async iterator of events over one WebSocket that reconnects by itself.

    Made by `ProgressClient.subscribe`; see there. Also an async context manager that
    closes the socket on exit.
    """

    def __init__(
        self,
        client: ProgressClient,
        targets: list[str],
        *,
        after_seq: int | None,
        batch_ms: int | None,
        reconnect: bool,
        give_up_after: float | None,
        on_reconnecting: Callable[[str], None] | None,
    ) -> None:
        self._client = client
        self._targets = targets
        self._batch_ms = batch_ms
        self._reconnect = reconnect
        self._give_up_after = give_up_after
        self._on_reconnecting = on_reconnecting
        # Where each subscription resumes after a reconnect.
        self._resume_at: dict[str, int] = (
            {} if after_seq is None else dict.fromkeys(targets, after_seq)
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

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
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
            if target in self._targets and target not in self._resume_at and isinstance(seq, int):
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
            if target in self._targets:
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
            if not self._reconnect:
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
            if not self._reconnect:
                raise ServerUnreachable(f"{self._client.ws_url}: {reason}")
            if self._give_up_after is not None and loop.time() - started > self._give_up_after:
                raise ServerUnreachable(f"gave up reconnecting to {self._client.ws_url}: {reason}")
            self._notify(reason)
            await asyncio.sleep(delay)
            delay = min(delay * 2, _BACKOFF_MAX)

    async def _open(self) -> aiohttp.ClientWebSocketResponse:
        ws = await self._client.session.ws_connect(
            self._client.ws_url, heartbeat=20.0, timeout=aiohttp.ClientWSTimeout(ws_close=5.0)
        )
        try:
            if self._batch_ms is not None:
                await ws.send_json({"action": "configure", "batch_ms": self._batch_ms})
            for target in self._targets:
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
        if self._on_reconnecting is not None:
            self._on_reconnecting(reason)

    async def _drop(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None and not ws.closed:
            with contextlib.suppress(Exception):
                await ws.close()
