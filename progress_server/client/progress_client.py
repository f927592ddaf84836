"""`ProgressClient`: one server and one API key; the REST calls and live subscriptions."""

from __future__ import annotations

import asyncio
import builtins
import json
import os
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import Any, Literal, Self, cast

import aiohttp

from progress_server.client.errors import ServerUnreachable, api_error
from progress_server.client.records import FINAL_STATES, Event, TaskRecord
from progress_server.client.subscription import Subscription


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

    async def __aexit__(self, *exc_info: object) -> None:
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
        source: str | None = None,
        format: str | None = None,
        playlist: bool | None = None,
    ) -> TaskRecord:
        """Submit a download and return its record (state `pending`).

        `filename` must be a plain name (no folders); `sha256` is checked once the file is
        complete; `preset` asks for a transcode after the download (e.g. `mp4`, `mp3`,
        `remux-mp4`); the same `idempotency_key` within 24 h returns the first task.
        Media sources: `source` is "auto" (the server's default), "http" or "media";
        `format` a yt-dlp format selector; `playlist=False` takes one item of a playlist.
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
        for name, value in (("source", source), ("format", format), ("playlist", playlist)):
            if value is not None:
                body[name] = value
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
                    raise api_error(resp.status, await resp.text())
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
                    raise api_error(resp.status, text)
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
            lambda: self.session,
            self.ws_url,
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
