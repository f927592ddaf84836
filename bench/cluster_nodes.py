"""Cluster mode end to end (run through bench/cluster.py): events per second through real
server nodes, and how long a task waits after its node is killed.

Events per second: the same burst of small downloads (each tells queued, started,
processing and completed, plus progress) submitted over HTTP to one SQLite server (the
baseline, measured in the same run), to a cluster of 1 node and to a cluster of 3 nodes,
round-robin (each node runs 8 at once; no per-host limit bites); one WebSocket on the
first node counts what it receives. Stored events per
second are history rows over the wall time from the first submission to the last
completion; delivered is every frame the one socket got (progress included).

Kill -9: a slow download runs on one node of three; the node is killed; the time until
another node's `download.started` for it (seen on a WebSocket on a surviving node) and
until its bytes grow again, against --lease-timeout.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from tests.apiclient import eventually
from tests.clusterkit import Cluster, Node
from tests.origins import Origin
from tests.pgserver import PgServer
from tests.serverproc import ServerProcess, create_key

WS_PATH = "/api/progress/ws"
# Every download comes from one origin host: the per-host limit (cluster-wide) must not be
# what is measured.
BURST_ARGS = ["--max-concurrent", "8", "--max-per-host", "100", "--progress-interval", "0.05"]


class _Target:
    """Where the burst goes: base URLs of the nodes (one for SQLite) and the key."""

    def __init__(self, urls: list[str], key: str) -> None:
        self.urls = urls
        self.key = key

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


async def _burst(target: _Target, origin: Origin, tasks: int, submitters: int) -> dict[str, float]:
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(target.urls[0] + WS_PATH, headers=target.auth)
        await ws.send_json({"action": "subscribe", "task_id": "*"})
        first = json.loads((await ws.receive(timeout=30)).data)
        frames = 0
        completed = 0

        async def count() -> None:
            nonlocal frames, completed
            while completed < tasks:
                message = json.loads((await ws.receive(timeout=120)).data)
                for event in message.get("events", [message]):
                    frames += 1
                    if event.get("event") == "download.completed":
                        completed += 1

        counter = asyncio.create_task(count())
        queue = list(range(tasks))
        started = time.perf_counter()

        async def submitter(index: int) -> None:
            while queue:
                i = queue.pop()
                url = target.urls[(index + i) % len(target.urls)] + "/api/downloads"
                # Distinct names, as real downloads mostly have.
                body = {"url": origin.url(f"/file/f{i}.bin", size=20_000, seed=i)}
                async with http.post(url, json=body, headers=target.auth) as resp:
                    assert resp.status == 201, await resp.text()

        await asyncio.gather(*(submitter(n) for n in range(submitters)))
        await counter
        elapsed = time.perf_counter() - started
        after = first["seq"]
        stored = 0
        while True:
            url = f"{target.urls[0]}/api/events?after_seq={after}&limit=5000"
            async with http.get(url, headers=target.auth) as resp:
                page = (await resp.json())["events"]
            stored += len(page)
            if len(page) < 5000:
                break
            after = page[-1]["seq"]
        await ws.close()
    return {"seconds": elapsed, "stored": stored / elapsed, "delivered": frames / elapsed}


async def _sqlite_burst(
    root: Path, origin: Origin, tasks: int, submitters: int
) -> dict[str, float]:
    data = root / "sqlite"
    key = await asyncio.to_thread(create_key, data, "bench", True)
    server = ServerProcess(
        data, "--loopback-only", "--min-free-space", "0", "--max-concurrent", "8"
    )
    await asyncio.to_thread(server.start, 30)
    try:
        return await _burst(_Target([server.base_url], key), origin, tasks, submitters)
    finally:
        await asyncio.to_thread(server.stop)


async def _cluster_burst(
    root: Path, pg: PgServer, origin: Origin, nodes: int, tasks: int, submitters: int
) -> dict[str, float]:
    async with pg.database() as url:
        cluster = Cluster(root, url, nodes, extra_args=BURST_ARGS)
        await cluster.start()
        try:
            target = _Target([node.server.base_url for node in cluster.nodes], cluster.key)
            return await _burst(target, origin, tasks, submitters)
        finally:
            await cluster.close()


async def _kill_once(root: Path, pg: PgServer, origin: Origin, lease: float) -> dict[str, float]:
    async with pg.database() as url:
        cluster = Cluster(root, url, 3, lease_timeout=lease)
        await cluster.start()
        try:
            return await _time_takeover(cluster, origin)
        finally:
            await cluster.close()


async def _time_takeover(cluster: Cluster, origin: Origin) -> dict[str, float]:
    size = 40_000_000
    task_id = (await cluster[0].submit(origin.url(size=size, rate=1_000_000)))["task_id"]
    record: dict[str, Any] = {}

    async def running() -> bool:
        nonlocal record
        record = await cluster[0].task(task_id)
        downloaded: int = record["progress"]["downloaded_bytes"]
        return record["state"] == "downloading" and downloaded > 0

    await eventually(running, 60)
    victim = cluster.by_name(record["node"])
    watcher: Node = next(node for node in cluster.nodes if node is not victim)
    ws = await cluster.http.ws_connect(watcher.server.base_url + WS_PATH, headers=watcher.headers)
    await ws.send_json({"action": "subscribe", "task_id": task_id})
    await ws.receive(timeout=30)
    await asyncio.to_thread(victim.server.kill)
    killed = time.monotonic()
    started_after = moving_after = None
    last_bytes = None
    while moving_after is None:
        message = json.loads((await ws.receive(timeout=120)).data)
        now = time.monotonic() - killed
        if message.get("event") == "download.started" and started_after is None:
            started_after = now
        progress = message.get("progress") or {}
        if started_after is not None and message.get("event") == "download.progress":
            if last_bytes is not None and progress["downloaded_bytes"] > last_bytes:
                moving_after = now
            last_bytes = progress["downloaded_bytes"]
    await ws.close()
    assert started_after is not None
    return {"started": started_after, "moving": moving_after}


async def run(tasks: int, submitters: int, lease: float, kills: int, fsync: bool) -> None:
    root = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    try:
        await _run(root, tasks, submitters, lease, kills, fsync)
    finally:
        shutil.rmtree(root, ignore_errors=True)


async def _run(
    root: Path, tasks: int, submitters: int, lease: float, kills: int, fsync: bool
) -> None:
    async with Origin() as origin:
        with PgServer(fsync=fsync) as pg:
            await pg.create_template()
            print(
                f"\nevents through real nodes: {tasks} downloads of 20 kB, {submitters}"
                f" submitters; PostgreSQL fsync={'on' if fsync else 'off'}, SQLite"
                " synchronous=FULL"
            )
            print(f"{'setup':<18} {'seconds':>8} {'stored events/s':>16} {'delivered/s':>12}")
            rows = [("SQLite, 1 server", await _sqlite_burst(root, origin, tasks, submitters))]
            for nodes in (1, 3):
                figures = await _cluster_burst(
                    root / f"c{nodes}", pg, origin, nodes, tasks, submitters
                )
                rows.append((f"cluster, {nodes} node{'s' if nodes > 1 else ''}", figures))
            for name, f in rows:
                print(
                    f"{name:<18} {f['seconds']:>8.1f} {f['stored']:>16.0f} {f['delivered']:>12.0f}"
                )
            print(f"\nkill -9 of the node running a download (--lease-timeout {lease:g}):")
            print(f"{'try':>3} {'started again after s':>22} {'bytes moving after s':>21}")
            for attempt in range(kills):
                took = await _kill_once(root / f"k{attempt}", pg, origin, lease)
                print(f"{attempt + 1:>3} {took['started']:>22.1f} {took['moving']:>21.1f}")
