"""Three real nodes on one PostgreSQL and one shared folder: tasks spread over the nodes,
every node answers for every task (record, polling, history, WebSocket, page), and what a
node says about itself (/healthz, /metrics) names it."""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from progress_server.web.sessions import COOKIE
from tests.apiclient import eventually
from tests.clusterkit import (
    Cluster,
    CountingOrigin,
    create_cluster_key,
    run_cli,
    running_cluster,
    stored,
)
from tests.origins import payload_sha256
from tests.wsclient import WS_PATH, recv, recv_until

SIZE = 1_500_000
RATE = 500_000


@pytest.fixture
async def origin() -> AsyncIterator[CountingOrigin]:
    async with CountingOrigin() as started:
        yield started


@pytest.fixture
async def cluster(tmp_path: Path, pg_url: str) -> AsyncIterator[Cluster]:
    async with running_cluster(tmp_path, pg_url, extra_args=["--max-concurrent", "1"]) as started:
        yield started


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def test_tasks_spread_over_the_nodes_and_any_node_answers_for_any_task(
    cluster: Cluster, origin: CountingOrigin
) -> None:
    a, b, c = cluster.nodes
    # All submitted to node a: each node runs one at a time, so the three run at once.
    tasks = [await a.submit(origin.url(size=SIZE, seed=i, rate=RATE)) for i in range(6)]
    ids = [t["task_id"] for t in tasks]

    running: dict[str, str] = {}

    async def three_running() -> bool:
        for task_id in ids:
            record = await b.task(task_id)
            if record["state"] == "downloading" and record["node"]:
                running[task_id] = record["node"]
        return len(set(running.values())) == 3

    await eventually(three_running, 60, lambda: f"running: {running}\n{cluster.logs()}")
    assert set(running.values()) == {"node-a", "node-b", "node-c"}

    # Polling any node for one running task gives about the same figures: every node has
    # its progress live, relayed through the database.
    task_id = next(iter(running))
    polled = await asyncio.gather(*(node.progress(task_id) for node in cluster.nodes))
    assert {p["state"] for p in polled} <= {"downloading", "processing", "completed"}
    seen = [p["progress"]["downloaded_bytes"] for p in polled]
    assert max(seen) - min(seen) <= RATE * 1.5, f"nodes disagree by more than ~1 s: {seen}"

    for i, task_id in enumerate(ids):
        done = await c.wait_for(task_id, "completed", within=90)
        assert done["node"] is None, "a finished task is nobody's"
        assert _sha256(cluster.downloads / done["filename"]) == payload_sha256(SIZE, seed=i)
    # The same record from every node.
    for task_id in ids:
        records = [await node.task(task_id) for node in cluster.nodes]
        assert records[0] == records[1] == records[2]
    # One history, the same on every node, each task's events in their order.
    histories = [await node.events() for node in cluster.nodes]
    assert histories[0] == histories[1] == histories[2]
    for task_id in ids:
        names = [e["event"] for e in histories[0] if e["task_id"] == task_id]
        assert names == [
            "download.queued",
            "download.started",
            "download.processing",
            "download.completed",
        ]


async def test_a_websocket_on_one_node_follows_downloads_on_the_others_gaplessly(
    cluster: Cluster, origin: CountingOrigin
) -> None:
    a, _, c = cluster.nodes
    http = cluster.http
    ws = await http.ws_connect(c.server.base_url + WS_PATH, headers=c.headers)
    await ws.send_json({"action": "subscribe", "task_id": "*"})
    subscribed = await recv(ws)
    assert subscribed["event"] == "subscribed"
    first_seq = subscribed["seq"]

    ids = [(await a.submit(origin.url(size=SIZE, seed=i, rate=RATE)))["task_id"] for i in range(3)]
    completed: set[object] = set()

    def all_completed(frame: dict[str, object]) -> bool:
        if frame.get("event") == "download.completed":
            completed.add(frame["task_id"])
        return completed == set(ids)

    frames = await recv_until(ws, all_completed, within=120)
    history = await a.events(first_seq)
    assert {e["task_id"] for e in history} == set(ids)
    live = stored(frames)
    # Every stored event reached the socket once, in seq order, whichever node wrote it.
    assert [e["seq"] for e in live] == [e["seq"] for e in history]
    seqs = [f["seq"] for f in frames if "seq" in f]
    assert seqs == sorted(seqs) and len(seqs) == len(set(seqs))
    progress_for = {f["task_id"] for f in frames if f.get("event") == "download.progress"}
    assert progress_for == set(ids), "live progress of every task reached node c"
    runners = {node.name for node in cluster.nodes for t in ids if node.ran(t)}
    assert runners - {"node-c"}, f"the tasks ran on {runners}: none elsewhere to follow"
    await ws.close()

    # A socket on node b replaying from the middle gets the rest once, in order.
    middle = history[len(history) // 2]["seq"]
    b = cluster.nodes[1]
    ws = await http.ws_connect(b.server.base_url + WS_PATH, headers=b.headers)
    await ws.send_json({"action": "subscribe", "task_id": "*", "after_seq": middle})
    replayed = await recv_until(ws, lambda f: f.get("event") == "subscribed", within=30)
    assert [e["seq"] for e in stored(replayed)] == [e["seq"] for e in history if e["seq"] > middle]
    await ws.close()


async def test_each_node_names_itself_in_healthz_and_metrics(cluster: Cluster) -> None:
    for node in cluster.nodes:
        status, body = await node.healthz()
        assert status == 200
        assert body["status"] == "ok" and body["node"] == node.name
        assert body["database"] == "ok"
        async with cluster.http.get(
            node.server.base_url + "/metrics", headers=node.headers
        ) as resp:
            text = await resp.text()
        assert resp.status == 200
        samples = [line for line in text.splitlines() if line and not line.startswith("#")]
        assert samples and all(f'node="{node.name}"' in line for line in samples), samples[:5]


async def test_a_key_revoked_anywhere_stops_working_on_every_node_within_a_second(
    cluster: Cluster,
) -> None:
    user = await asyncio.to_thread(
        create_cluster_key, cluster.database, "alice", cluster.root / "cli", False
    )
    headers = {"Authorization": f"Bearer {user}"}
    for node in cluster.nodes:
        async with cluster.http.get(node.server.base_url + "/api/downloads", headers=headers) as r:
            assert r.status == 200, "a key made by the CLI works on every node"
    await cluster[0].call("GET", "/api/downloads")
    revoke = await asyncio.to_thread(
        run_cli, cluster.root / "cli", "keys", "revoke", "alice", "--database", cluster.database
    )
    assert revoke.returncode == 0, revoke.stderr
    revoked_at = time.monotonic()

    async def refused_everywhere() -> bool:
        statuses = []
        for node in cluster.nodes:
            url = node.server.base_url + "/api/downloads"
            async with cluster.http.get(url, headers=headers) as resp:
                statuses.append(resp.status)
        return statuses == [401, 401, 401]

    await eventually(refused_everywhere, 5)
    assert time.monotonic() - revoked_at < 1.5


async def test_a_page_session_made_on_one_node_works_and_ends_on_the_others(
    cluster: Cluster,
) -> None:
    a, b, c = cluster.nodes
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
        async with http.post(
            a.server.base_url + "/login",
            data={"api_key": cluster.key},
            allow_redirects=False,
        ) as resp:
            assert resp.status == 303
            token = resp.cookies[COOKIE].value
        cookie = {"Cookie": f"{COOKIE}={token}"}
        async with http.get(b.server.base_url + "/", headers=cookie) as resp:
            html = await resp.text()
        assert 'id="tasks"' in html, "node b knows the session node a made"
        csrf = re.search(r'name="csrf-token" content="([^"]+)"', html)
        assert csrf is not None
        async with http.get(c.server.base_url + "/api/downloads", headers=cookie) as resp:
            assert resp.status == 200, "and so does node c, for the page's API calls"

        async with http.post(
            b.server.base_url + "/logout",
            data={"csrf_token": csrf.group(1)},
            headers={**cookie, "Origin": b.server.base_url},
            allow_redirects=False,
        ) as resp:
            assert resp.status == 303

        async def ended_everywhere() -> bool:
            answers = []
            for node in cluster.nodes:
                url = node.server.base_url + "/api/downloads"
                async with http.get(url, headers=cookie) as resp:
                    answers.append(resp.status)
            return answers == [401, 401, 401]

        await eventually(ended_everywhere, 5)
