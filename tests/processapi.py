"""The HTTP calls a test makes against a server process it started, with one Bearer key."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from typing import Any

import aiohttp

from tests.serverproc import ServerProcess

JSON = dict[str, Any]


class ProcessApi(ABC):
    """Calls against `server` through `http` with `headers`; `where()` names the server in a
    failed call's message (and may add its log)."""

    server: ServerProcess

    @property
    @abstractmethod
    def http(self) -> aiohttp.ClientSession: ...

    @property
    @abstractmethod
    def headers(self) -> dict[str, str]: ...

    def where(self) -> str:
        return ""

    async def call(self, method: str, path: str, status: int = 200, **kwargs: Any) -> Any:
        url = self.server.base_url + path
        async with self.http.request(method, url, headers=self.headers, **kwargs) as resp:
            text = await resp.text()
            assert resp.status == status, f"{method} {path}: {resp.status} {text}{self.where()}"
            return json.loads(text) if text else None

    async def submit(self, url: str, **fields: Any) -> JSON:
        task: JSON = await self.call("POST", "/api/downloads", 201, json={"url": url, **fields})
        return task

    async def task(self, task_id: str) -> JSON:
        task: JSON = await self.call("GET", f"/api/downloads/{task_id}")
        return task
