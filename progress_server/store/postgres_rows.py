"""The rows of the cluster's PostgreSQL database as statements see them: a new task's
parameters, a change's assignments, a row as a Task, and what a lost database raises."""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeAlias
from urllib.parse import urlsplit

import asyncpg

from progress_server.models import Task
from progress_server.store.rows import NEW_TASK_COLUMNS, TaskChange
from progress_server.store.rows import new_task_params as shared_new_task_params
from progress_server.store.sqlite_rows import ColumnRow, change_columns, task_from_row

# Task columns of type json: their parameters (JSON text) are cast.
_JSON_COLUMNS = frozenset({"result", "error", "entries"})

# What a lost or restarting database raises (InternalClientError: a connection that broke
# in the middle of an operation).
DATABASE_ERRORS = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
    TimeoutError,
)

# NOTIFY channels every node's ClusterFeed listens on: a deleted task's id, and (from the
# api_keys trigger of migration 0004) the news that a key changed.
DELETIONS_CHANNEL = "progress_server_deletions"
KEYS_CHANNEL = "progress_server_keys"

# A connection of our own or one lent by the pool; asyncpg's classes are generic only in
# its type stubs, so the alias exists for the type checker alone.
if TYPE_CHECKING:
    Connection: TypeAlias = (
        asyncpg.Connection[asyncpg.Record] | asyncpg.pool.PoolConnectionProxy[asyncpg.Record]
    )


# A new task's row: the columns both stores insert, then the host the per-host limit counts
# across the cluster.
_NEW_COLUMNS = (*NEW_TASK_COLUMNS, "host")
INSERT_TASK = (
    f"INSERT INTO tasks ({', '.join(_NEW_COLUMNS)})\n"
    "VALUES ("
    + ", ".join(
        f"${i}::json" if name == "options" else f"${i}"
        for i, name in enumerate(_NEW_COLUMNS, start=1)
    )
    + ")\n"
)


def new_task_params(task: Task, idempotency_key: str | None) -> list[object]:
    """A new task's values for INSERT_TASK."""
    return [*shared_new_task_params(task, idempotency_key), task_host(task.url)]


# A new task unless the owner's Idempotency-Key already names one (then no row comes back).
ENQUEUE = (
    INSERT_TASK
    + "ON CONFLICT (owner_key_id, idempotency_key) WHERE idempotency_key IS NOT NULL"
    + " DO NOTHING RETURNING task_order"
)


def cluster_task_from_row(row: ColumnRow) -> Task:
    """A task row of the cluster's database: the task, and which node runs it."""
    task = task_from_row(row)
    task.node = row["node"]
    task.clustered = True
    return task


def task_host(url: str) -> str:
    """The host --max-per-host counts a task against (as the scheduler counts it)."""
    return urlsplit(url).hostname or ""


def change_assignments(change: TaskChange, first_param: int) -> tuple[str, list[object]]:
    """`col = $n, ...` for the columns a change sets, numbered from `first_param`."""
    values = change_columns(change)
    # Column names come from TaskChange's own fields, never from input.
    parts = [
        f"{name} = ${number}::json" if name in _JSON_COLUMNS else f"{name} = ${number}"
        for number, name in enumerate(values, start=first_param)
    ]
    return ", ".join(parts), list(values.values())


async def update_task_row(db: Connection, task_id: str, change: TaskChange) -> None:
    assignments, params = change_assignments(change, first_param=2)
    await db.execute(f"UPDATE tasks SET {assignments} WHERE task_id = $1", task_id, *params)
