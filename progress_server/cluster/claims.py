"""Who runs which task: claims with leases, heartbeats that renew them, and fenced writes.

A node claims one task per short transaction: the oldest unfinished task nobody holds a
live lease on, skipping rows another transaction has locked. Claims queue on one
transaction-scoped advisory lock, so the cluster-wide count of running tasks per host that
decides a claim cannot change under it. A claim sets `node`, `lease_until` and increments
`lease_epoch`; the runner renews the lease (every third of it) and makes every write
conditional on the epoch it claimed. Zero rows matched means another node took the task
over (or a user cancelled it): the runner must stop at once, having changed nothing.

All times come from the database's clock: the nodes' clocks may disagree.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from progress_server.cluster.eventlog import append_guarded
from progress_server.coordination import LeaseLost
from progress_server.models import Event, Task, TaskState
from progress_server.store.postgres import PostgresStore
from progress_server.store.postgres_rows import change_assignments, cluster_task_from_row
from progress_server.store.rows import SnapshotRow, TaskChange

# pg_advisory_xact_lock key all claims share ("prog" "clm" in ASCII).
CLAIMS_LOCK = 0x70726F67_636C6D

# A task holds a transfer slot (and counts against --max-per-host) while it is leased in
# one of these states; processing runs on the node's own processing limit instead.
_TRANSFER_STATES = [str(TaskState.PENDING), str(TaskState.DOWNLOADING)]
_UNFINISHED_STATES = [*_TRANSFER_STATES, str(TaskState.PROCESSING)]

_CLAIM = """
WITH candidate AS (
    SELECT t.task_id FROM tasks t
    WHERE t.state = ANY($4::text[])
      AND (t.lease_until IS NULL OR t.lease_until < clock_timestamp())
      -- A playlist's parent runs no more once its entries exist: it follows them.
      AND t.entries IS NULL
      AND (t.state = $6 OR ($5 AND (
            SELECT count(*) FROM tasks r
            WHERE r.host = t.host AND r.lease_until >= clock_timestamp()
              AND r.state = ANY($7::text[])
          ) < $3))
    ORDER BY t.task_order
    LIMIT 1
    FOR UPDATE SKIP LOCKED
)
UPDATE tasks SET node = $1,
    lease_until = clock_timestamp() + make_interval(secs => $2),
    lease_epoch = lease_epoch + 1
FROM candidate WHERE tasks.task_id = candidate.task_id
RETURNING tasks.*
"""


@dataclass(frozen=True)
class Claim:
    """A task this node now runs, and the epoch every write of its run is fenced by."""

    task: Task
    epoch: int


class TaskLeases:
    """One node's claims and leases on the shared queue."""

    def __init__(self, store: PostgresStore, node_id: str, lease_seconds: float) -> None:
        self._store = store
        self.node_id = node_id
        self.lease_seconds = lease_seconds

    async def claim_next(self, max_per_host: int, *, transfers: bool = True) -> Claim | None:
        """Claim the oldest task that may run now, or None. With `transfers` False (no free
        slot on this node) only a task waiting for processing qualifies."""
        async with self._store.transaction() as db:
            await db.execute("SELECT pg_advisory_xact_lock($1)", CLAIMS_LOCK)
            row = await db.fetchrow(
                _CLAIM,
                self.node_id,
                self.lease_seconds,
                max_per_host,
                _UNFINISHED_STATES if transfers else [str(TaskState.PROCESSING)],
                transfers,
                str(TaskState.PROCESSING),
                _TRANSFER_STATES,
            )
        if row is None:
            return None
        return Claim(cluster_task_from_row(row), row["lease_epoch"])

    async def renew(self, held: Mapping[str, int]) -> set[str]:
        """Extend the leases on `held` (task_id -> epoch); returns the tasks no longer ours.

        A lease that ran out while nobody claimed the task is still ours to renew: the epoch,
        not the clock, says whether anyone else has written for it since.
        """
        if not held:
            return set()
        rows = await self._store.pool.fetch(
            "UPDATE tasks t SET lease_until = clock_timestamp() + make_interval(secs => $1)"
            " FROM unnest($2::text[], $3::bigint[]) AS h(task_id, epoch)"
            " WHERE t.task_id = h.task_id AND t.lease_epoch = h.epoch AND t.node = $4"
            " RETURNING t.task_id",
            self.lease_seconds,
            list(held),
            list(held.values()),
            self.node_id,
        )
        return set(held) - {row["task_id"] for row in rows}

    async def write(
        self,
        task_id: str,
        epoch: int,
        change: TaskChange,
        draft: Event | None = None,
        *,
        release: bool = False,
    ) -> Event | None:
        """A runner's write: the change and its event, atomically, if the task is still
        ours at `epoch`; raises LeaseLost (and changes nothing) if not. With `release`, the
        node lets go of the task in the same write (it finished, failed or paused)."""
        assignments, params = change_assignments(change, first_param=3)
        if release:
            assignments += ", node = NULL, lease_until = NULL"
        fenced = (
            f"UPDATE tasks SET {assignments} WHERE task_id = $1 AND lease_epoch = $2"
            " RETURNING task_id"
        )
        async with self._store.write_connection() as db:
            if draft is not None:
                stored = await append_guarded(db, fenced, [task_id, epoch, *params], draft)
                if stored is None:
                    raise LeaseLost(task_id)
                return stored.event
            if not await db.fetch(fenced, task_id, epoch, *params):
                raise LeaseLost(task_id)
            return None

    async def confirm(self, task_id: str, epoch: int) -> None:
        """A fenced write that changes nothing: raises LeaseLost unless the task is still
        held at `epoch`."""
        found = await self._store.pool.fetchval(
            "UPDATE tasks SET lease_epoch = lease_epoch WHERE task_id = $1 AND lease_epoch = $2"
            " RETURNING task_id",
            task_id,
            epoch,
        )
        if found is None:
            raise LeaseLost(task_id)

    async def save_snapshots(self, snapshots: Iterable[tuple[SnapshotRow, int]]) -> set[str]:
        """Store running tasks' byte counts, each fenced by its epoch, in one statement;
        returns the tasks whose lease was lost (their rows are left alone)."""
        rows = list(snapshots)
        if not rows:
            return set()
        saved = await self._store.pool.fetch(
            "UPDATE tasks t SET downloaded_bytes = s.downloaded, total_bytes = s.total,"
            " updated_at = $5"
            " FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[])"
            "   AS s(task_id, downloaded, total, epoch)"
            " WHERE t.task_id = s.task_id AND t.lease_epoch = s.epoch"
            " RETURNING t.task_id",
            [snap.task_id for snap, _ in rows],
            [snap.downloaded_bytes for snap, _ in rows],
            [snap.total_bytes for snap, _ in rows],
            [epoch for _, epoch in rows],
            time.time(),
        )
        return {snap.task_id for snap, _ in rows} - {row["task_id"] for row in saved}

    async def release(self, held: Mapping[str, int]) -> None:
        """Give back leases without changing the tasks (a node shutting down): another node
        may claim them at once instead of waiting for the leases to run out."""
        if not held:
            return
        await self._store.pool.execute(
            "UPDATE tasks t SET node = NULL, lease_until = NULL"
            " FROM unnest($1::text[], $2::bigint[]) AS h(task_id, epoch)"
            " WHERE t.task_id = h.task_id AND t.lease_epoch = h.epoch",
            list(held),
            list(held.values()),
        )
