"""Nodes that die or freeze mid-transfer, and the per-host limit held across the cluster:
three real nodes, one PostgreSQL, one origin, one shared downloads folder."""

from __future__ import annotations

import asyncio
import hashlib
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.apiclient import eventually
from tests.clusterkit import Cluster, CountingOrigin, Node, running_cluster, stored
from tests.origins import payload_sha256
from tests.wsclient import WS_PATH, recv, recv_until

LEASE = 3.0
SIZE = 4_000_000
RATE = 800_000


@pytest.fixture
async def origin() -> AsyncIterator[CountingOrigin]:
    async with CountingOrigin() as started:
        yield started


@pytest.fixture
async def cluster(tmp_path: Path, pg_url: str) -> AsyncIterator[Cluster]:
    async with running_cluster(tmp_path, pg_url, lease_timeout=LEASE) as started:
        yield started


async def _running_on(cluster: Cluster, watcher: Node, task_id: str, at_least: int) -> Node:
    """The node downloading the task once it has `at_least` bytes."""
    record: dict[str, object] = {}

    async def far_enough() -> bool:
        nonlocal record
        record = await watcher.task(task_id)
        done = record["progress"]["downloaded_bytes"]  # type: ignore[index]
        return record["state"] == "downloading" and bool(record["node"]) and done >= at_least

    await eventually(far_enough, 60, lambda: f"{record}\n{cluster.logs()}")
    return cluster.by_name(str(record["node"]))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _ranges(origin: CountingOrigin) -> list[str | None]:
    return [r.range for r in origin.requests if r.method == "GET"]


async def test_a_killed_nodes_download_goes_on_elsewhere_from_its_part_file(
    cluster: Cluster, origin: CountingOrigin
) -> None:
    submitted = await cluster[0].submit(origin.url(size=SIZE, rate=RATE))
    task_id = submitted["task_id"]
    # Progress counts bytes received; the engine writes them behind, in blocks of at most
    # a tenth of a second (one more block may be on its way to the disk): half a second of
    # the origin's rate later, the first quarter is in the `.part` that a kill leaves.
    first = await _running_on(cluster, cluster[0], task_id, SIZE // 4 + RATE // 2)
    watcher = next(node for node in cluster.nodes if node is not first)
    ws = await cluster.http.ws_connect(watcher.server.base_url + WS_PATH, headers=watcher.headers)
    await ws.send_json({"action": "subscribe", "task_id": task_id})
    assert (await recv(ws))["event"] == "subscribed"

    await asyncio.to_thread(first.server.kill)
    killed_at = time.time()
    frames = await recv_until(
        ws, lambda f: f.get("event") in ("download.completed", "download.error"), within=90
    )
    events = [f["event"] for f in stored(frames)]
    assert events[0] == "download.started" and events[-1] == "download.completed", events
    restarted = next(f for f in stored(frames) if f["event"] == "download.started")
    taken_over_after = _epoch(restarted["timestamp"]) - killed_at
    # Within the lease, plus the claim tick and this machine's load.
    assert taken_over_after < LEASE + 4, taken_over_after

    done = await watcher.wait_for(task_id, "completed")
    assert done["node"] is None
    assert _sha256(cluster.downloads / done["filename"]) == payload_sha256(SIZE)
    # The second node asked only for the bytes the first had not written.
    resumed = [r for r in _ranges(origin) if r is not None]
    assert resumed, f"no Range request: {_ranges(origin)}"
    offset = int(resumed[-1].removeprefix("bytes=").rstrip("-"))
    assert SIZE // 4 <= offset < SIZE
    taker = next(node for node in cluster.nodes if node is not first and node.ran(task_id))
    assert taker is not None
    await ws.close()


async def test_a_node_frozen_past_its_lease_writes_nothing_when_it_thaws(
    cluster: Cluster, origin: CountingOrigin
) -> None:
    submitted = await cluster[0].submit(origin.url(size=SIZE, rate=RATE))
    task_id = submitted["task_id"]
    frozen = await _running_on(cluster, cluster[0], task_id, SIZE // 5)
    watcher = next(node for node in cluster.nodes if node is not frozen)
    assert frozen.server.pid is not None
    await asyncio.to_thread(frozen.server.proc.send_signal, signal.SIGSTOP)  # type: ignore[union-attr]
    try:
        # Another node takes the task over once the frozen node's lease ran out.
        taker = await _running_on(cluster, watcher, task_id, SIZE // 2)
        assert taker is not frozen
    finally:
        # Thawed while the other node is still downloading: its stream, its timers and its
        # buffered bytes all come back at once.
        await asyncio.to_thread(frozen.server.proc.send_signal, signal.SIGCONT)  # type: ignore[union-attr]
    done = await watcher.wait_for(task_id, "completed")
    path = cluster.downloads / done["filename"]
    assert _sha256(path) == payload_sha256(SIZE)

    async def frozen_node_stood_down() -> bool:
        return "this node no longer holds it" in frozen.server.log_text()

    await eventually(frozen_node_stood_down, 15, frozen.logs)
    await asyncio.sleep(1.0)
    history = [e for e in await watcher.events() if e["task_id"] == task_id]
    assert [e["event"] for e in history].count("download.completed") == 1, history
    assert _sha256(path) == payload_sha256(SIZE), "the thawed node wrote into the file"
    assert not list(cluster.downloads.glob("*.part")), "no part file left behind"
    status, health = await frozen.healthz()
    assert status == 200 and health["node"] == frozen.name, "the thawed node serves on"


async def test_a_thawed_node_that_receives_nothing_more_stands_down_all_the_same(
    cluster: Cluster, origin: CountingOrigin
) -> None:
    # The first response stalls for a minute: after the thaw no byte arrives that a write
    # fence could refuse, so the node must learn from the database that it lost the task.
    stall_at = SIZE // 4
    url = origin.url(size=SIZE, rate=RATE, stall_after=stall_at, stall=60, stall_times=1)
    task_id = (await cluster[0].submit(url))["task_id"]
    frozen = await _running_on(cluster, cluster[0], task_id, stall_at)
    watcher = next(node for node in cluster.nodes if node is not frozen)
    await asyncio.to_thread(frozen.server.proc.send_signal, signal.SIGSTOP)  # type: ignore[union-attr]
    try:
        taker = await _running_on(cluster, watcher, task_id, SIZE // 2)
        assert taker is not frozen
    finally:
        await asyncio.to_thread(frozen.server.proc.send_signal, signal.SIGCONT)  # type: ignore[union-attr]
    stand_down = f"task {task_id}: stopped, this node no longer holds it"

    async def stood_down() -> bool:
        return stand_down in frozen.server.log_text() and await frozen.active_downloads() == 0

    await eventually(stood_down, 15, frozen.logs)
    # The taker was still writing the shared `.part` when the node thawed: a cut or a
    # write of the thawed node's would show in the sha256.
    done = await watcher.wait_for(task_id, "completed")
    path = cluster.downloads / done["filename"]
    assert _sha256(path) == payload_sha256(SIZE), "the thawed node changed the file"
    assert frozen.server.log_text().count(stand_down) == 1, frozen.logs()
    history = [e["event"] for e in await watcher.events() if e["task_id"] == task_id]
    assert history.count("download.completed") == 1, history
    assert not list(cluster.downloads.glob("*.part")), "no part file left behind"


async def test_max_per_host_holds_across_the_cluster(
    tmp_path: Path, pg_url: str, origin: CountingOrigin
) -> None:
    args = ["--max-per-host", "1", "--max-concurrent", "2"]
    async with running_cluster(tmp_path, pg_url, lease_timeout=LEASE, extra_args=args) as cluster:
        # Two host names for the one origin: each may have one download in the cluster.
        urls = [origin.url(size=600_000, seed=i, rate=400_000) for i in range(3)]
        urls += [u.replace("127.0.0.1", "localhost") for u in urls]
        ids = [(await cluster[i % 3].submit(url))["task_id"] for i, url in enumerate(urls)]
        for task_id in ids:
            await cluster[1].wait_for(task_id, "completed", within=120)
    assert origin.most_in_flight == {"127.0.0.1": 1, "localhost": 1}, origin.most_in_flight
    assert origin.most_at_once == 2, "the two hosts' downloads ran side by side"


def _epoch(iso: object) -> float:
    from datetime import datetime

    return datetime.fromisoformat(str(iso).replace("Z", "+00:00")).timestamp()
