"""The scheduler: a global concurrency limit, submission order, and the rest pending."""

from __future__ import annotations

from tests.apiclient import Api
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
