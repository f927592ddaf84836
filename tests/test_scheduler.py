"""The scheduler: a global concurrency limit, submission order, the rest pending, and slots
that always come back."""

from __future__ import annotations

from pathlib import Path

from progress_server.app import client_session
from progress_server.engine import Downloader
from progress_server.events import EventBus
from progress_server.models import TaskState
from progress_server.new_task import NewTask
from progress_server.processing.build import build_pipeline
from progress_server.scheduler import Scheduler
from progress_server.settings import Settings
from progress_server.snapshots import SnapshotCache
from progress_server.store.sqlite import SqliteStore
from tests.apiclient import Api, eventually
from tests.conftest import MakeApi
from tests.origins import Origin


async def test_max_concurrent_runs_the_rest_in_submission_order(
    make_api: MakeApi, origin: Origin
) -> None:
    api = await make_api(max_concurrent=2, max_per_host=10)
    tasks = [
        await api.submit(origin.url(f"/file/q{i}.bin", size=600_000, rate=1_000_000, seed=i))
        for i in range(4)
    ]
    ids = [t["task_id"] for t in tasks]
    # The two latecomers wait as pending while the first two run.
    states = {t["task_id"]: t["state"] for t in await api.tasks()}
    assert states[ids[2]] == states[ids[3]] == "pending"
    for task_id in ids:
        await api.wait_for(task_id, "completed")

    # Replay the history (ordered by seq) to see how many ran at any one moment.
    events = [e for e in await api.events() if e["task_id"] in ids]
    running: set[str] = set()
    most = 0
    started: list[str] = []
    for event in events:
        if event["event"] == "download.started":
            running.add(event["task_id"])
            started.append(event["task_id"])
        elif event["state"] != "downloading":
            running.discard(event["task_id"])
        most = max(most, len(running))
    assert most == 2
    assert started == ids


async def test_a_pending_task_reports_pending_until_a_slot_frees(
    make_api: MakeApi, origin: Origin
) -> None:
    api: Api = await make_api(max_concurrent=1)
    blocker = await api.submit(origin.url(size=10_000_000, rate=1_000_000))
    waiting = await api.submit(origin.url(size=1000, seed=9))
    await api.wait_bytes(blocker["task_id"], 1)
    polled = await api.progress(waiting["task_id"])
    assert polled["state"] == "pending"
    assert polled["progress"]["downloaded_bytes"] == 0
    await api.json("POST", f"/api/downloads/{blocker['task_id']}/cancel")
    await api.wait_for(waiting["task_id"], "completed")


async def test_a_run_stopped_before_its_first_step_frees_its_slot(
    tmp_path: Path, origin: Origin
) -> None:
    settings = Settings(data_dir=tmp_path / "data", max_concurrent=1, min_free_bytes=0)
    store = SqliteStore(settings.db_path)
    await store.open()
    key_id = await store.create_key("k", "hash", False)
    bus = EventBus(store, SnapshotCache())
    await bus.start()
    session = client_session(settings)
    scheduler = Scheduler(
        settings, store, bus, Downloader(settings, session), build_pipeline(settings)
    )
    await scheduler.start()
    try:
        first, _ = await scheduler.submit(key_id, NewTask(origin.url(size=1000, seed=1)))
        # No await in between: its run exists but has not taken a step yet.
        cancelled = await scheduler.cancel(first)
        assert cancelled.state is TaskState.CANCELLED
        second, _ = await scheduler.submit(key_id, NewTask(origin.url(size=1000, seed=2)))

        async def second_completed() -> bool:
            stored = await store.get_task(second.task_id)
            return stored is not None and stored.state is TaskState.COMPLETED

        await eventually(second_completed, within=30)
        assert scheduler.active_downloads == 0
    finally:
        await scheduler.stop()
        await session.close()
        await store.close()
