"""Which state may follow which: every pair through the real TaskLifecycle (SQLite, event
bus), and every user action on every state a user can reach, through the real API."""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from progress_server.coordination import LocalWrites
from progress_server.errors import Conflict
from progress_server.events import EventBus
from progress_server.lifecycle import TaskLifecycle
from progress_server.models import Event, EventName, Task, TaskState
from progress_server.snapshots import SnapshotCache
from progress_server.store.sqlite import SqliteStore
from progress_server.transitions import NEXT_STATES
from tests.apiclient import Api, assert_error
from tests.conftest import MakeApi
from tests.origins import Origin

P, D, R, C, F, X, Z = (
    TaskState.PENDING,
    TaskState.DOWNLOADING,
    TaskState.PROCESSING,
    TaskState.COMPLETED,
    TaskState.FAILED,
    TaskState.CANCELLED,
    TaskState.PAUSED,
)
# The lifecycle as the contract and the scheduler describe it, written out pair by pair.
ALLOWED = {
    (P, D), (P, R), (P, Z), (P, X), (P, F),
    (D, D), (D, R), (D, Z), (D, X), (D, F), (D, P),
    (R, R), (R, D), (R, C), (R, X), (R, F),
    (Z, P), (Z, X),
    (F, P), (F, X),
    (X, P),
}  # fmt: skip
EVENT_FOR = {
    P: EventName.QUEUED,
    D: EventName.STARTED,
    R: EventName.PROCESSING,
    C: EventName.COMPLETED,
    F: EventName.ERROR,
    X: EventName.CANCELLED,
    Z: EventName.PAUSED,
}


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    opened = SqliteStore(tmp_path / "progress.db")
    await opened.open()
    await opened.create_key("k", "hash", False)
    yield opened
    await opened.close()


async def _stored_task(store: SqliteStore, bus: EventBus, state: TaskState) -> Task:
    now = time.time()
    task = Task(str(uuid.uuid4()), 1, "http://example.test/f", "f", state, now, now)

    async def insert(event: Event) -> Event:
        return await store.insert_task(task, None, event)

    await bus.publish(EventName.QUEUED, task.task_id, 1, state, persist=insert)
    return task


def test_the_table_names_every_state() -> None:
    assert set(NEXT_STATES) == set(TaskState)


async def test_every_pair_is_allowed_or_refused_as_the_lifecycle_says(store: SqliteStore) -> None:
    bus = EventBus(store, SnapshotCache())
    await bus.start()
    lifecycle = TaskLifecycle(bus, LocalWrites(store))
    for current, new in itertools.product(TaskState, TaskState):
        task = await _stored_task(store, bus, current)
        events_before = await store.events_after(0, task_ids=[task.task_id])
        if (current, new) in ALLOWED:
            await lifecycle.transition(task, EVENT_FOR[new], new)
            stored = await store.get_task(task.task_id)
            assert stored is not None and stored.state is new, (current, new)
            assert task.state is new
            events = await store.events_after(0, task_ids=[task.task_id])
            assert [e.name for e in events[len(events_before) :]] == [EVENT_FOR[new]]
        else:
            with pytest.raises(Conflict):
                await lifecycle.transition(task, EVENT_FOR[new], new)
            # Refused before anything was written or told.
            stored = await store.get_task(task.task_id)
            assert stored is not None and stored.state is current, (current, new)
            assert task.state is current
            assert await store.events_after(0, task_ids=[task.task_id]) == events_before


# -- every action on every state a user can reach, over HTTP -----------------------------

SLOW = {"size": 20_000_000, "rate": 300_000}
ACTIONS = ("cancel", "pause", "resume", "retry")
# (state the task is in, action) -> the state it answers with, or 409.
EXPECTED: dict[tuple[str, str], str | int] = {
    ("pending", "cancel"): "cancelled",
    ("pending", "pause"): "paused",
    ("pending", "resume"): "pending",
    ("pending", "retry"): 409,
    ("downloading", "cancel"): "cancelled",
    ("downloading", "pause"): "paused",
    ("downloading", "resume"): "downloading",
    ("downloading", "retry"): 409,
    ("paused", "cancel"): "cancelled",
    ("paused", "pause"): "paused",
    ("paused", "resume"): "pending",
    ("paused", "retry"): 409,
    ("failed", "cancel"): "cancelled",
    ("failed", "pause"): 409,
    ("failed", "resume"): 409,
    ("failed", "retry"): "pending",
    ("cancelled", "cancel"): "cancelled",
    ("cancelled", "pause"): 409,
    ("cancelled", "resume"): 409,
    ("cancelled", "retry"): "pending",
    ("completed", "cancel"): 409,
    ("completed", "pause"): 409,
    ("completed", "resume"): 409,
    ("completed", "retry"): 409,
}


async def _act(api: Api, task_id: str, action: str, expected: str | int) -> None:
    before = (await api.task(task_id))["state"]
    resp = await api.call("POST", f"/api/downloads/{task_id}/{action}")
    body = await resp.json()
    if expected == 409:
        assert resp.status == 409, (before, action, body)
        assert_error(body, "conflict")
        # A refused action changes nothing.
        assert (await api.task(task_id))["state"] == before
    else:
        assert resp.status == 200, (before, action, body)
        assert body["state"] == expected, (before, action, body)


async def test_every_action_on_every_reachable_state(make_api: MakeApi, origin: Origin) -> None:
    # Four slow downloads fill the host's slots, so later tasks wait as pending.
    api = await make_api(max_concurrent=10, max_per_host=4, max_retries=0)
    running = [await api.submit(origin.url(**SLOW, seed=i)) for i in range(4)]
    for task in running:
        await api.wait_bytes(task["task_id"], 1)
    by_state: dict[str, dict[str, str]] = {}

    async def reach(state: str, url: str) -> None:
        for action in ACTIONS:
            task = await api.submit(url)
            if state in ("paused", "cancelled"):
                verb = "pause" if state == "paused" else "cancel"
                await api.json("POST", f"/api/downloads/{task['task_id']}/{verb}")
            by_state.setdefault(state, {})[action] = task["task_id"]

    await reach("pending", origin.url(**SLOW, seed=10))
    await reach("paused", origin.url(**SLOW, seed=11))
    await reach("cancelled", origin.url(**SLOW, seed=12))
    # The next ones must run now: room for them on another host name of the same origin.
    other_host = origin.url("/file/x.bin", size=1000).replace("127.0.0.1", "localhost")
    await reach("completed", other_host)
    await reach(
        "failed", origin.url("/file/gone.bin", status=404).replace("127.0.0.1", "localhost")
    )
    for state in ("completed", "failed"):
        for task_id in by_state[state].values():
            await api.wait_for(task_id, state)
    for state in ("pending", "paused"):
        for task_id in by_state[state].values():
            assert (await api.task(task_id))["state"] == state

    for state in ("pending", "paused", "cancelled", "completed", "failed"):
        for action, task_id in by_state[state].items():
            await _act(api, task_id, action, EXPECTED[(state, action)])
    # Last: cancelling or pausing a running task frees its slot for the pending ones.
    for action, task in zip(ACTIONS, running, strict=True):
        await _act(api, task["task_id"], action, EXPECTED[("downloading", action)])
