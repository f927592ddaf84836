"""The in-memory snapshot of every task that polling reads: no SQL per poll.

Each snapshot keeps its polling JSON pre-encoded with an ETag, both changed only when what a
poller would see changes, so an idle task answers 304 for as long as it stays idle.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from progress_server.models import JSON, Progress, Task, TaskState, polling_wire


@dataclass
class TaskSnapshot:
    task_id: str
    owner_key_id: int
    state: TaskState
    progress: Progress
    changed_at: float
    etag: str
    body: bytes
    # How it ended: {"error": ...} for a failed task, {"result": ...} for a completed one,
    # else empty. Not part of the polling body; `subscribed` carries it.
    outcome: JSON = field(default_factory=dict)

    @property
    def wire(self) -> dict[str, object]:
        return json.loads(self.body)  # type: ignore[no-any-return]


class SnapshotCache:
    def __init__(self) -> None:
        self._tasks: dict[str, TaskSnapshot] = {}
        self._version = 0

    def __len__(self) -> int:
        return len(self._tasks)

    def get(self, task_id: str) -> TaskSnapshot | None:
        return self._tasks.get(task_id)

    def values(self) -> list[TaskSnapshot]:
        return list(self._tasks.values())

    def load(self, task: Task) -> None:
        progress = Progress(task.downloaded_bytes, task.total_bytes)
        body = {"error": task.error, "result": task.result}
        self.update(
            task.task_id,
            task.owner_key_id,
            task.state,
            progress,
            task.updated_at,
            outcome_of(task.state, body),
        )

    def update(
        self,
        task_id: str,
        owner_key_id: int,
        state: TaskState,
        progress: Progress,
        at: float,
        outcome: JSON | None = None,
    ) -> TaskSnapshot:
        """Take in a task's state and figures; `outcome` None keeps the one it has while
        the state stays the same."""
        progress = progress.in_state(state)
        current = self._tasks.get(task_id)
        if current is not None and current.state is state:
            if outcome is None:
                outcome = current.outcome
            same = current.progress.to_wire() == progress.to_wire()
            if same and outcome == current.outcome:
                return current
        self._version += 1
        body = json.dumps(polling_wire(task_id, state, progress, at)).encode()
        # The version counter makes the ETag unique across restarts of a task's life too:
        # the task id's prefix keeps it unique across tasks.
        etag = f'"{task_id[:8]}-{self._version:x}-{int(at * 1000):x}"'
        snapshot = TaskSnapshot(
            task_id, owner_key_id, state, progress, at, etag, body, outcome or {}
        )
        self._tasks[task_id] = snapshot
        return snapshot

    def remove(self, task_id: str) -> None:
        self._tasks.pop(task_id, None)

    def all(self) -> list[TaskSnapshot]:
        return list(self._tasks.values())


def outcome_of(state: TaskState, body: JSON) -> JSON | None:
    """What a failed task's error or a completed task's result is, from an event's body or
    a stored record; None when `body` does not say."""
    if state is TaskState.FAILED and body.get("error"):
        return {"error": body["error"]}
    if state is TaskState.COMPLETED and body.get("result"):
        return {"result": body["result"]}
    return None
