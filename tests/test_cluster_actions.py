"""A user's actions on any node, whichever node runs the task: pause, resume, cancel and
delete reach the running node at once, and it stops writing."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.apiclient import eventually
from tests.clusterkit import Cluster, CountingOrigin, Node, running_cluster
from tests.origins import payload_sha256

SIZE = 4_000_000
RATE = 700_000


@pytest.fixture
async def origin() -> AsyncIterator[CountingOrigin]:
    async with CountingOrigin() as started:
        yield started


@pytest.fixture
async def cluster(tmp_path: Path, pg_url: str) -> AsyncIterator[Cluster]:
    async with running_cluster(tmp_path, pg_url) as started:
        yield started


async def _runner_and_others(cluster: Cluster, task_id: str) -> tuple[Node, list[Node]]:
    record: dict[str, object] = {}

    async def running() -> bool:
        nonlocal record
        record = await cluster[0].task(task_id)
        done = record["progress"]["downloaded_bytes"]  # type: ignore[index]
        return record["state"] == "downloading" and bool(record["node"]) and done > 0

    await eventually(running, 60, lambda: f"{record}\n{cluster.logs()}")
    runner = cluster.by_name(str(record["node"]))
    return runner, [node for node in cluster.nodes if node is not runner]


async def _stays_still(path: Path, origin: CountingOrigin) -> None:
    """The part file stops growing and nobody downloads from the origin any more."""

    async def idle() -> bool:
        return sum(origin.host_in_flight.values()) == 0

    await eventually(idle, 5, lambda: f"still downloading: {origin.host_in_flight}")
    before = path.stat().st_size if path.exists() else -1
    await asyncio.sleep(1.0)
    after = path.stat().st_size if path.exists() else -1
    assert before == after, "a node went on writing the part file"


async def test_pause_on_one_node_and_resume_on_another(
    cluster: Cluster, origin: CountingOrigin
) -> None:
    task_id = (await cluster[0].submit(origin.url(size=SIZE, rate=RATE)))["task_id"]
    runner, (pauser, resumer) = await _runner_and_others(cluster, task_id)
    paused = await pauser.call("POST", f"/api/downloads/{task_id}/pause")
    assert paused["state"] == "paused"
    record = await runner.task(task_id)
    assert record["state"] == "paused" and record["node"] is None
    await _stays_still(cluster.downloads / f"{record['filename']}.part", origin)
    kept = (cluster.downloads / f"{record['filename']}.part").stat().st_size
    assert 0 < kept < SIZE

    resumed = await resumer.call("POST", f"/api/downloads/{task_id}/resume")
    assert resumed["state"] == "pending"
    done = await runner.wait_for(task_id, "completed")
    path = cluster.downloads / done["filename"]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == payload_sha256(SIZE)
    ranges = [r.range for r in origin.requests if r.method == "GET" and r.range]
    assert ranges and int(ranges[-1].removeprefix("bytes=").rstrip("-")) > 0
    names = [e["event"] for e in await resumer.events() if e["task_id"] == task_id]
    assert names.count("download.paused") == 1 and names[-1] == "download.completed"


async def test_cancel_on_another_node_stops_the_run(
    cluster: Cluster, origin: CountingOrigin
) -> None:
    task_id = (await cluster[0].submit(origin.url(size=SIZE, rate=RATE)))["task_id"]
    runner, others = await _runner_and_others(cluster, task_id)
    cancelled = await others[0].call("POST", f"/api/downloads/{task_id}/cancel")
    assert cancelled["state"] == "cancelled"
    told = [e for e in await runner.events() if e["task_id"] == task_id]
    assert told[-1]["event"] == "download.cancelled"
    assert told[-1]["error"]["type"] == "cancelled"
    await _stays_still(cluster.downloads / f"{cancelled['filename']}.part", origin)
    for node in cluster.nodes:
        assert (await node.progress(task_id))["state"] == "cancelled"
    # Refused everywhere alike: a cancelled task cannot be paused.
    await runner.call("POST", f"/api/downloads/{task_id}/pause", 409)


async def test_delete_on_another_node_is_gone_everywhere(
    cluster: Cluster, origin: CountingOrigin
) -> None:
    task_id = (await cluster[0].submit(origin.url(size=SIZE, rate=RATE)))["task_id"]
    runner, others = await _runner_and_others(cluster, task_id)
    filename = (await runner.task(task_id))["filename"]
    await others[1].call("DELETE", f"/api/downloads/{task_id}", 204)

    async def gone_everywhere() -> bool:
        statuses = []
        for node in cluster.nodes:
            for path in (f"/api/downloads/{task_id}", f"/api/progress/{task_id}"):
                url = node.server.base_url + path
                async with node.http.get(url, headers=node.headers) as resp:
                    statuses.append(resp.status)
        return set(statuses) == {404}

    await eventually(gone_everywhere, 5)
    await _stays_still(cluster.downloads / f"{filename}.part", origin)
    assert not (cluster.downloads / f"{filename}.part").exists()
