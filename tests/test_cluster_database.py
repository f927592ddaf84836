"""The database connection under the nodes' feet: a node's LISTEN connection terminated, and
PostgreSQL itself stopped and started again mid-run. Downloads go on, every node's
WebSocket still gets every stored event once and in order, and while the database is away
every node says so on /healthz."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from tests.apiclient import eventually
from tests.clusterkit import Cluster, CountingOrigin, Node, stored
from tests.origins import payload_sha256
from tests.pgserver import PgServer
from tests.wsclient import WS_PATH, recv, recv_until

SIZE = 3_000_000
RATE = 600_000


@pytest.fixture
async def origin() -> AsyncIterator[CountingOrigin]:
    async with CountingOrigin() as started:
        yield started


class Watch:
    """A WebSocket on one node, subscribed to everything from now on."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.first_seq = 0

    async def __aenter__(self) -> Watch:
        self.ws = await self.node.http.ws_connect(
            self.node.server.base_url + WS_PATH, headers=self.node.headers
        )
        await self.ws.send_json({"action": "subscribe", "task_id": "*"})
        subscribed = await recv(self.ws)
        assert subscribed["event"] == "subscribed"
        self.first_seq = subscribed["seq"]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.ws.close()

    async def until_completed(self, ids: list[str], within: float = 120) -> list[dict[str, object]]:
        done: set[object] = set()

        def all_done(frame: dict[str, object]) -> bool:
            if frame.get("event") == "download.completed":
                done.add(frame["task_id"])
            return done == set(ids)

        return await recv_until(self.ws, all_done, within)

    async def assert_gapless(self, frames: list[dict[str, object]]) -> None:
        history = await self.node.events(self.first_seq)
        assert [f["seq"] for f in stored(frames)] == [e["seq"] for e in history]


async def _submit(cluster: Cluster, origin: CountingOrigin, count: int) -> list[str]:
    return [
        (await cluster[i % 3].submit(origin.url(size=SIZE, seed=i, rate=RATE)))["task_id"]
        for i in range(count)
    ]


async def _feed_connections(url: str, name: str) -> list[int]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE application_name = $1",
            f"progress-server {name} feed",
        )
        return [row["pid"] for row in rows]
    finally:
        await conn.close()


async def test_a_terminated_listen_connection_comes_back_without_a_gap(
    tmp_path: Path, pg_url: str, origin: CountingOrigin
) -> None:
    cluster = Cluster(tmp_path, pg_url)
    await cluster.start()
    try:
        watched = cluster[1]
        async with Watch(watched) as watch:
            ids = await _submit(cluster, origin, 3)
            await watched.wait_for(ids[0], "downloading")
            (pid,) = await _feed_connections(pg_url, watched.name)
            conn = await asyncpg.connect(pg_url)
            try:
                assert await conn.fetchval("SELECT pg_terminate_backend($1)", pid)
            finally:
                await conn.close()

            async def reconnected() -> bool:
                return len(await _feed_connections(pg_url, watched.name)) == 1

            await eventually(reconnected, 10)
            assert await _feed_connections(pg_url, watched.name) != [pid]
            frames = await watch.until_completed(ids)
            await watch.assert_gapless(frames)
        assert "feed lost its connection" in watched.server.log_text()
    finally:
        await cluster.close()
    assert not cluster.crashes(), cluster.logs(60)


async def test_postgresql_stopped_and_started_mid_run(
    tmp_path: Path, origin: CountingOrigin
) -> None:
    pg = PgServer()
    await asyncio.to_thread(pg.start)
    try:
        await pg.create_template()
        async with pg.database() as url:
            cluster = Cluster(tmp_path, url, lease_timeout=5.0)
            await cluster.start()
            try:
                await _outage(cluster, origin, pg)
            finally:
                await cluster.close()
            assert not cluster.crashes(), cluster.logs(60)
    finally:
        await asyncio.to_thread(pg.stop)


async def _outage(cluster: Cluster, origin: CountingOrigin, pg: PgServer) -> None:
    watched = cluster[2]
    async with Watch(watched) as watch:
        ids = await _submit(cluster, origin, 3)
        for task_id in ids:
            await watched.wait_for(task_id, "downloading")
        await asyncio.to_thread(pg.halt)
        try:

            async def every_node_says_so() -> bool:
                answers = [await node.healthz() for node in cluster.nodes]
                return all(
                    status == 503 and body["database"] == "unreachable" for status, body in answers
                )

            await eventually(every_node_says_so, 10, cluster.logs)
        finally:
            await asyncio.to_thread(pg.resume)

        async def every_node_ok() -> bool:
            statuses = [(await node.healthz())[0] for node in cluster.nodes]
            return statuses == [200, 200, 200]

        await eventually(every_node_ok, 15, cluster.logs)
        frames = await watch.until_completed(ids)
        await watch.assert_gapless(frames)
    # Every file whole: the runs that stopped while the database was away went on from
    # their part files.
    for i, task_id in enumerate(ids):
        done = await watched.task(task_id)
        path = cluster.downloads / done["filename"]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == payload_sha256(SIZE, seed=i)
