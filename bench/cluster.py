"""Cluster mode's event log: what commit-ordered seq costs, against a plain sequence.

Every stored event of a cluster takes its seq from one counter row, inside the appending
transaction (progress_server/cluster/eventlog.py): appends from all nodes queue on that
row. This measures appends per second through it with 1 and 3 nodes (each node its own
connection pool with several concurrent writers, as a node's running tasks would be),
against a baseline measured in the same run on the same PostgreSQL: the same rows and
NOTIFY with seq from a bigserial (which is faster, and wrong: a `seq > N` reader can skip
a slower transaction's event for good). Progress events (a seq and a notification, no
row) are measured one commit each and through a node's ProgressRelay (group commits), with
many downloads per node publishing at once. A PostgreSQL from tests/pgserver.py is started
for the run.

    python bench/cluster.py [--seconds 5] [--writers 4] [--tasks 32] [--fsync]
        [--part log|nodes|both] [--downloads 300] [--lease 5] [--kills 3]

Goal: the counter keeps at least half the baseline's rate; relayed progress reaches at
least 4 events/s for each of 100 downloads per node (the default --progress-interval).

The `nodes` part (bench/cluster_nodes.py) runs real servers: events per second through 1
and 3 cluster nodes against one SQLite server in the same run, and the time from `kill -9`
of a node to its download running again elsewhere, against the lease. Goals: 3 nodes carry
at least what 1 node does; a killed node's download runs again within the lease plus the
one-second claim tick.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeAlias

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncpg

from progress_server.cluster.eventlog import EVENTS_CHANNEL, append, publish_progress
from progress_server.cluster.relay import ProgressRelay
from progress_server.models import Event, EventName, Progress, TaskState
from progress_server.store.postgres_migrations import apply_migrations
from tests.pgserver import PgServer

Pool: TypeAlias = "asyncpg.Pool[asyncpg.Record]"

_BASELINE = """
WITH stored AS (
    INSERT INTO naive_events (task_id, owner_key_id, event, state, body, created_at)
    VALUES ($1, $2, $3, $4, $5::json, $6) RETURNING seq
)
SELECT seq, pg_notify($7, seq::text) FROM stored
"""


def _draft(name: EventName = EventName.STARTED) -> Event:
    body = {"progress": {"percentage": 12.5, "downloaded_bytes": 1, "total_bytes": 8}}
    return Event(0, name, "00000000-0000-0000-0000-000000000000", 1, TaskState.DOWNLOADING, 0, body)


async def _baseline(pool: Pool) -> None:
    draft = _draft()
    # One statement, its own transaction, as the event log's append.
    async with pool.acquire() as db:
        await db.fetchval(
            _BASELINE,
            draft.task_id,
            draft.owner_key_id,
            str(draft.name),
            str(draft.state),
            '{"progress": {}}',
            time.time(),
            EVENTS_CHANNEL,
        )


async def _counter(pool: Pool) -> None:
    await append(pool, _draft())


async def _progress_alone(pool: Pool) -> None:
    await publish_progress(pool, [(_draft(EventName.PROGRESS), Progress(1, 8, 1e6))])


_relays: dict[int, ProgressRelay] = {}


async def _progress_relayed(pool: Pool) -> None:
    relay = _relays.setdefault(id(pool), ProgressRelay(pool))
    await relay.publish(_draft(EventName.PROGRESS), Progress(1, 8, 1e6))


async def _rate(
    pools: list[Pool], writers: int, seconds: float, one: Callable[[Pool], Awaitable[None]]
) -> float:
    done = 0
    deadline = time.perf_counter() + seconds

    async def writer(pool: Pool) -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            await one(pool)
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(writer(pool) for pool in pools for _ in range(writers)))
    return done / (time.perf_counter() - started)


async def main(seconds: float, writers: int, tasks: int, fsync: bool) -> None:
    with PgServer(fsync=fsync) as server:
        url = await server.create_database("bench")
        await apply_migrations(url)
        setup = await asyncpg.connect(url)
        await setup.execute(
            "CREATE TABLE naive_events (seq bigserial PRIMARY KEY, task_id text NOT NULL,"
            " owner_key_id bigint NOT NULL, event text NOT NULL, state text NOT NULL,"
            " body json NOT NULL, created_at double precision NOT NULL)"
        )
        await setup.close()
        print(
            f"PostgreSQL fsync={'on' if fsync else 'off'}; stored events: {writers} writers"
            f" per node; progress: {tasks} downloads per node"
        )
        print(
            f"{'nodes':>5} {'baseline/s':>11} {'counter/s':>10} {'ratio':>6}"
            f" {'progress 1 commit each/s':>25} {'progress relayed/s':>19}"
        )
        for nodes in (1, 3):
            # max_size as PostgresStore's default pool.
            pools = [
                await asyncpg.create_pool(url, min_size=writers, max_size=10) for _ in range(nodes)
            ]
            try:
                await _rate(pools, writers, 1, _counter)  # warm-up: plans, connections
                baseline = await _rate(pools, writers, seconds, _baseline)
                counter = await _rate(pools, writers, seconds, _counter)
                alone = await _rate(pools, tasks, seconds, _progress_alone)
                relayed = await _rate(pools, tasks, seconds, _progress_relayed)
            finally:
                for relay in _relays.values():
                    await relay.close()
                _relays.clear()
                for pool in pools:
                    await pool.close()
            print(
                f"{nodes:>5} {baseline:>11.0f} {counter:>10.0f} {counter / baseline:>6.2f}"
                f" {alone:>25.0f} {relayed:>19.0f}"
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--tasks", type=int, default=32, help="progress publishers per node")
    parser.add_argument("--fsync", action="store_true", help="durable commits (default off)")
    parser.add_argument("--part", choices=("log", "nodes", "both"), default="both")
    parser.add_argument("--downloads", type=int, default=300, help="burst through the nodes")
    parser.add_argument("--lease", type=float, default=5.0, help="--lease-timeout for kill -9")
    parser.add_argument("--kills", type=int, default=3)
    args = parser.parse_args()
    if args.part in ("log", "both"):
        asyncio.run(main(args.seconds, args.writers, args.tasks, args.fsync))
    if args.part in ("nodes", "both"):
        from bench.cluster_nodes import run

        asyncio.run(run(args.downloads, 16, args.lease, args.kills, args.fsync))
