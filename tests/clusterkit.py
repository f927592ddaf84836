"""A cluster the way an operator runs one: several real `serve` processes on one PostgreSQL
database and one shared downloads folder, and a client for each node.

The origin runs in the test's event loop, so every blocking ServerProcess call goes through
a thread: the origin must keep serving while nodes start, stop and die.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from tests.apiclient import eventually
from tests.origins import Origin
from tests.processapi import ProcessApi
from tests.serverproc import ServerProcess, _child_env

JSON = dict[str, Any]


def run_cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`progress-server ARGS` as a user runs it, from `cwd`."""
    cmd = [sys.executable, "-m", "progress_server", *args]
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        cmd, capture_output=True, text=True, cwd=cwd, env=_child_env(None), timeout=60
    )


def create_cluster_key(database: str, name: str, cwd: Path, admin: bool = True) -> str:
    """`keys create NAME --database URL`: one key for every node."""
    args = ["keys", "create", name, "--database", database] + (["--admin"] if admin else [])
    proc = run_cli(cwd, *args)
    lines = [line.strip() for line in proc.stdout.splitlines() if line.strip()]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"keys create exited {proc.returncode}: {proc.stderr}")
    return lines[-1]


class Node(ProcessApi):
    """One node's process and an HTTP client for it."""

    def __init__(self, server: ServerProcess, name: str, cluster: Cluster) -> None:
        self.server = server
        self.name = name
        self.cluster = cluster

    @property
    def http(self) -> aiohttp.ClientSession:
        return self.cluster.http

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.cluster.key}"}

    def where(self) -> str:
        return f" (on {self.name})"

    async def progress(self, task_id: str) -> JSON:
        polled: JSON = await self.call("GET", f"/api/progress/{task_id}")
        return polled

    async def events(self, after_seq: int = 0) -> list[JSON]:
        found: list[JSON] = []
        while True:
            page = await self.call("GET", f"/api/events?after_seq={after_seq}&limit=5000")
            found += page["events"]
            if len(page["events"]) < 5000:
                return found
            after_seq = page["events"][-1]["seq"]

    async def wait_for(self, task_id: str, state: str, within: float = 60) -> JSON:
        task: JSON = {}

        async def reached() -> bool:
            nonlocal task
            task = await self.task(task_id)
            assert task["state"] not in {"failed", "cancelled"} - {state}, task
            return bool(task["state"] == state)

        await eventually(reached, within, lambda: f"{state} not reached: {task}\n{self.logs()}")
        return task

    async def healthz(self) -> tuple[int, JSON]:
        async with self.http.get(self.server.base_url + "/healthz") as resp:
            return resp.status, await resp.json()

    async def active_downloads(self) -> float:
        """The node's own `progress_server_active_downloads` from /metrics."""
        url = self.server.base_url + "/metrics"
        async with self.http.get(url, headers=self.headers) as resp:
            text = await resp.text()
        assert resp.status == 200, text
        name = "progress_server_active_downloads{"
        return float(next(line for line in text.splitlines() if line.startswith(name)).split()[-1])

    def logs(self) -> str:
        return self.cluster.logs()

    def ran(self, task_id: str) -> bool:
        """Whether this node's log says it downloaded the task."""
        return f"task {task_id} downloading" in self.server.log_text()


class Cluster:
    """`count` nodes named node-a, node-b, ... sharing `database` and `root/shared`."""

    def __init__(
        self,
        root: Path,
        database: str,
        count: int = 3,
        *,
        lease_timeout: float = 3.0,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.root = root
        self.database = database
        self.downloads = root / "shared"
        self.key = ""
        self.nodes: list[Node] = []
        for i in range(count):
            name = f"node-{chr(ord('a') + i)}"
            args = [
                "--database",
                database,
                "--node-id",
                name,
                "--downloads-dir",
                str(self.downloads),
                "--lease-timeout",
                str(lease_timeout),
                "--loopback-only",
                "--min-free-space",
                "0",
                *extra_args,
            ]
            self.nodes.append(Node(ServerProcess(root / name, *args), name, self))
        self._http: aiohttp.ClientSession | None = None

    @property
    def http(self) -> aiohttp.ClientSession:
        assert self._http is not None, "cluster not started"
        return self._http

    def __getitem__(self, index: int) -> Node:
        return self.nodes[index]

    def by_name(self, name: str) -> Node:
        return next(node for node in self.nodes if node.name == name)

    async def start(self) -> None:
        self.key = await asyncio.to_thread(
            create_cluster_key, self.database, "admin", self.root / "cli"
        )
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        await asyncio.gather(*(asyncio.to_thread(node.server.start, 30) for node in self.nodes))

    async def close(self) -> None:
        await asyncio.gather(
            *(asyncio.to_thread(_stop_quietly, node.server) for node in self.nodes)
        )
        if self._http is not None:
            await self._http.close()

    def crashes(self) -> list[str]:
        """Nodes whose log holds a traceback: nothing a node does may end in one."""
        return [node.name for node in self.nodes if "Traceback" in node.server.log_text()]

    def logs(self, lines: int = 25) -> str:
        return "\n".join(
            f"--- {node.name} ---\n{node.server.log_tail(lines)}" for node in self.nodes
        )


@asynccontextmanager
async def running_cluster(
    root: Path, database: str, *, lease_timeout: float = 3.0, extra_args: Sequence[str] = ()
) -> AsyncIterator[Cluster]:
    """A started cluster, stopped afterwards; a traceback in any node's log fails the test."""
    started = Cluster(root, database, lease_timeout=lease_timeout, extra_args=extra_args)
    try:
        await started.start()
        yield started
    finally:
        await started.close()
    assert not started.crashes(), started.logs(60)


def _stop_quietly(server: ServerProcess) -> None:
    if server.running:
        try:
            server.stop(timeout=15)
        except TimeoutError:
            pass


class CountingOrigin(Origin):
    """The test origin, also counting the responses it is sending at once, per host name
    the client asked for (so one origin serves several "hosts": 127.0.0.1 and localhost)."""

    def __init__(self) -> None:
        super().__init__()
        # (Origin's own `in_flight` counts per path.)
        self.host_in_flight: dict[str, int] = {}
        self.most_in_flight: dict[str, int] = {}
        self.most_at_once = 0

    async def _serve_file(self, request: web.Request) -> web.StreamResponse:
        host = request.url.host or ""
        self.host_in_flight[host] = self.host_in_flight.get(host, 0) + 1
        most = max(self.most_in_flight.get(host, 0), self.host_in_flight[host])
        self.most_in_flight[host] = most
        self.most_at_once = max(self.most_at_once, sum(self.host_in_flight.values()))
        try:
            return await super()._serve_file(request)
        finally:
            self.host_in_flight[host] -= 1


def stored(frames: Sequence[JSON]) -> list[JSON]:
    """The frames that tell of stored events: what the history holds (progress, and a
    processing step's progress, are not stored; nor are answers such as `subscribed`)."""
    return [
        f
        for f in frames
        if str(f.get("event", "")).startswith("download.")
        and f["event"] != "download.progress"
        and not (f["event"] == "download.processing" and "processing" in f)
    ]
