"""TaskLifecycle: every task state change, checked against the transition table, persisted
with its event in one write, then published and logged (one log line per transition)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from urllib.parse import urlsplit

from progress_server import transitions
from progress_server.coordination import RunLease, TaskWrites
from progress_server.events import EventBus
from progress_server.models import JSON, Event, EventName, Progress, Task, TaskState
from progress_server.store import TaskChange

log = logging.getLogger("progress_server.tasks")

# Error messages in logs are cut here: an origin's error page can be long.
_LOGGED_MESSAGE_CHARS = 500


class TaskLifecycle:
    def __init__(self, bus: EventBus, writes: TaskWrites) -> None:
        self._bus = bus
        self._writes = writes

    async def transition(
        self,
        task: Task,
        name: EventName,
        state: TaskState,
        body: JSON | None = None,
        *,
        progress: Progress | None = None,
        change: TaskChange | None = None,
        lease: RunLease | None = None,
    ) -> None:
        """Persist a task change with its event, then tell everyone; never half-done.

        A run's change comes with its `lease` (the write is fenced by it: LeaseLost when
        the task is no longer the run's); a user's action comes without one.
        Refused (Conflict) before anything is written when the table does not let `state`
        follow the task's state. Shielded: a cancel arriving mid-write must not leave the
        database and the in-memory task disagreeing about what happened.
        """
        transitions.check(task.state, state)
        full = dataclasses.replace(change or TaskChange(), state=state, updated_at=time.time())

        async def persist(event: Event) -> Event:
            return await self._writes.transition(task, event, full, lease)

        async def publish() -> None:
            await self._bus.publish(
                name,
                task.task_id,
                task.owner_key_id,
                state,
                body,
                progress=progress,
                persist=persist,
            )
            # Inside the shield too: a transition that happened is applied and logged even
            # when the caller is cancelled while it is being written.
            full.apply_to(task)
            _log_transition(task.task_id, name, state, body or {})

        await asyncio.shield(publish())

    async def update(self, task: Task, change: TaskChange, lease: RunLease | None = None) -> None:
        """Store facts about a task that change no state and tell no one (a transfer's
        validators and size as the origin answered)."""
        await self._writes.update(task, change, lease)
        change.apply_to(task)


def log_submitted(task: Task) -> None:
    """Submission's log line, the one that names the URL (without secrets)."""
    log.info("task %s queued: %s", task.task_id, _redacted(task.url))


def log_deleted(task: Task, with_file: bool) -> None:
    log.info("task %s deleted%s", task.task_id, " with its file" if with_file else "")


def _log_transition(task_id: str, name: EventName, state: TaskState, body: JSON) -> None:
    error = body.get("error") or {}
    message = str(error.get("message"))[:_LOGGED_MESSAGE_CHARS]
    level = logging.INFO
    if name is EventName.RETRYING:
        level = logging.WARNING
        text = (
            f"attempt {body.get('attempt')} failed ({error.get('type')}: {message}),"
            f" retrying in {body.get('retry_in_seconds')}s"
        )
    elif name is EventName.ERROR:
        level = logging.WARNING
        text = f"failed ({error.get('type')}): {message}"
    elif name is EventName.STARTED and body.get("restarted_from_zero"):
        text = f"downloading, restarted from zero: {body.get('reason')}"
    elif name is EventName.QUEUED:
        text = "queued again after a restart" if body.get("recovered") else "queued again"
    elif name is EventName.COMPLETED:
        result = body.get("result") or {}
        text = f"completed: {result.get('filename')} ({result.get('size_mb')} MiB)"
    else:
        text = state.value
    log.log(level, "task %s %s", task_id, text)


def _redacted(url: str) -> str:
    """The URL without credentials or query: operators see where, never a secret."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}"
