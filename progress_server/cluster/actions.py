"""What any node does to a task for a user (cancel, pause, resume, retry), whoever runs it,
with the event that tells of it taking its seq from the cluster's log in the same
statement. (Submitting is PostgresStore.insert_task.)"""

from __future__ import annotations

from collections.abc import Collection

from progress_server.cluster.eventlog import append_guarded
from progress_server.models import Event, TaskState
from progress_server.store.postgres import PostgresStore
from progress_server.store.postgres_rows import change_assignments
from progress_server.store.rows import TaskChange


async def take_over(
    store: PostgresStore,
    task_id: str,
    allowed_from: Collection[TaskState],
    change: TaskChange,
    draft: Event,
) -> Event | None:
    """A user's action (cancel, pause, resume, retry) from any node, whoever runs the task.

    Applies only if the task is in one of `allowed_from`, and returns the stored event;
    None otherwise (the caller re-reads and answers with the state it finds). It ends any
    node's run: the epoch moves on, so the runner's next write fails and it stops.
    """
    assignments, params = change_assignments(change, first_param=3)
    guarded = (
        f"UPDATE tasks SET {assignments}, node = NULL, lease_until = NULL,"
        " lease_epoch = lease_epoch + 1"
        " WHERE task_id = $1 AND state = ANY($2::text[]) RETURNING task_id"
    )
    allowed = [str(state) for state in allowed_from]
    async with store.write_connection() as db:
        stored = await append_guarded(db, guarded, [task_id, allowed, *params], draft)
    return None if stored is None else stored.event
