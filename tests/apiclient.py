"""Talk to an in-process progress-server over real HTTP, as a user's client would.

`Api` wraps pytest-aiohttp's TestClient (a real socket on 127.0.0.1) with the few things
every API test repeats: a Bearer key, submitting a task and waiting for a state.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient

from progress_server.appkeys import STORE
from progress_server.auth import generate_key, hash_key
from progress_server.settings import Settings

JSON = dict[str, Any]
# What pytest-aiohttp's `aiohttp_client(app)` gives: a real socket to an in-process app.
AppClient = TestClient[web.Request, web.Application]
FINAL = ("completed", "failed", "cancelled")


class Api:
    def __init__(self, client: AppClient, settings: Settings) -> None:
        self.client = client
        self.settings = settings
        self.key = ""

    @property
    def store_path(self) -> str:
        return str(self.settings.db_path)

    async def new_key(self, name: str, admin: bool = False) -> str:
        key = generate_key()
        await self.client.app[STORE].create_key(name, hash_key(key), admin)
        return key

    def auth(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.key}"}

    async def call(
        self,
        method: str,
        path: str,
        *,
        key: str | None = None,
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> ClientResponse:
        merged = {**self.auth(key), **(headers or {})}
        return await self.client.request(method, path, headers=merged, **kwargs)

    async def json(self, method: str, path: str, status: int = 200, **kwargs: Any) -> Any:
        resp = await self.call(method, path, **kwargs)
        text = await resp.text()
        assert resp.status == status, f"{method} {path}: {resp.status} {text}"
        return await resp.json() if text else None

    async def submit(self, url: str, *, key: str | None = None, **fields: Any) -> JSON:
        body = {"url": url, **fields}
        task: JSON = await self.json("POST", "/api/downloads", 201, key=key, json=body)
        return task

    async def task(self, task_id: str, key: str | None = None) -> JSON:
        task: JSON = await self.json("GET", f"/api/downloads/{task_id}", key=key)
        return task

    async def tasks(self, query: str = "", key: str | None = None) -> list[JSON]:
        listing = await self.json("GET", f"/api/downloads{query}", key=key)
        tasks: list[JSON] = listing["tasks"]
        return tasks

    async def progress(self, task_id: str) -> JSON:
        polled: JSON = await self.json("GET", f"/api/progress/{task_id}")
        return polled

    async def events(self, task_id: str | None = None, after_seq: int = 0) -> list[JSON]:
        path = f"/api/downloads/{task_id}/events" if task_id else "/api/events"
        page = await self.json("GET", f"{path}?after_seq={after_seq}")
        events: list[JSON] = page["events"]
        return events

    async def wait_for(
        self,
        task_id: str,
        states: str | Iterable[str],
        within: float = 60,
        key: str | None = None,
    ) -> JSON:
        """Poll the record until its state is one of `states`; fails fast on another end."""
        wanted = {states} if isinstance(states, str) else set(states)
        task: JSON = {}

        async def reached() -> bool:
            nonlocal task
            task = await self.task(task_id, key)
            if task["state"] in FINAL and task["state"] not in wanted:
                raise AssertionError(f"task ended {task['state']}, wanted {wanted}: {task}")
            return task["state"] in wanted

        await eventually(reached, within, lambda: f"task never reached {wanted}: {task}")
        return task

    async def wait_bytes(self, task_id: str, at_least: int, within: float = 60) -> JSON:
        """Poll until the task has downloaded at least `at_least` bytes."""
        task: JSON = {}

        async def enough() -> bool:
            nonlocal task
            task = await self.task(task_id)
            return int(task["progress"]["downloaded_bytes"]) >= at_least

        await eventually(enough, within, lambda: f"never got {at_least} bytes: {task}")
        return task


async def eventually(
    condition: Callable[[], Awaitable[bool]],
    within: float = 60,
    message: Callable[[], str] = lambda: "condition not met",
    interval: float = 0.05,
) -> None:
    """Wait for a condition without timing assumptions: generous deadline, short polls."""
    deadline = time.monotonic() + within
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"after {within}s: {message()}")
        await asyncio.sleep(interval)


@contextmanager
def read_only_db(path: str | Path) -> Iterator[sqlite3.Connection]:
    """The server's real SQLite file, opened read-only beside the running server."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        yield db
    finally:
        db.close()


def assert_error(body: Any, error_type: str | None = None) -> None:
    """The contract's one error shape: {"error": {"type": str, "message": str}}."""
    assert isinstance(body, dict) and set(body) == {"error"}, body
    error = body["error"]
    assert isinstance(error.get("type"), str) and error["type"], body
    assert isinstance(error.get("message"), str) and error["message"], body
    if error_type is not None:
        assert error["type"] == error_type, body
