"""A task that is not downloading reports no speed and no ETA, wherever it is read; a late
subscriber learns from `subscribed` why a task failed or what it produced (#11)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp

from tests.apiclient import Api
from tests.conftest import MakeApi
from tests.enginekit import FAST_RETRIES
from tests.origins import Origin
from tests.serverproc import ServerProcess, create_key, free_port
from tests.wsclient import WS_PATH, recv

AT_REST = {"speed_mbps": 0, "eta_seconds": None}


def resting(progress: dict[str, Any]) -> dict[str, Any]:
    return {"speed_mbps": progress["speed_mbps"], "eta_seconds": progress["eta_seconds"]}


async def subscribed(api: Api, task_id: str) -> dict[str, Any]:
    ws = await api.client.ws_connect(WS_PATH, headers=api.auth())
    try:
        await ws.send_json({"action": "subscribe", "task_id": task_id})
        frame = await recv(ws)
        assert frame["event"] == "subscribed", frame
        return frame
    finally:
        await ws.close()


async def every_reading(api: Api, task_id: str) -> list[dict[str, Any]]:
    """The task's progress as polling, the record, the listing and `subscribed` tell it."""
    listed = [t for t in await api.tasks() if t["task_id"] == task_id]
    return [
        (await api.progress(task_id))["progress"],
        (await api.task(task_id))["progress"],
        listed[0]["progress"],
        (await subscribed(api, task_id))["progress"],
    ]


async def test_a_paused_task_reports_no_speed_and_no_eta(api: Api, origin: Origin) -> None:
    task = await api.submit(origin.url(size=20_000_000, rate=1_000_000))
    task_id = task["task_id"]

    async def moving() -> dict[str, Any]:
        polled: dict[str, Any] = (await api.progress(task_id))["progress"]
        return polled

    await api.wait_bytes(task_id, 600_000)
    # Under way it has a speed and an ETA, so what follows is not a reading that never moved.
    before = await moving()
    assert before["speed_mbps"] > 0 and before["eta_seconds"] is not None, before

    paused = await api.json("POST", f"/api/downloads/{task_id}/pause")
    assert paused["state"] == "paused"
    assert resting(paused["progress"]) == AT_REST
    for reading in await every_reading(api, task_id):
        assert resting(reading) == AT_REST, reading

    cancelled = await api.json("POST", f"/api/downloads/{task_id}/cancel")
    assert resting(cancelled["progress"]) == AT_REST
    for reading in await every_reading(api, task_id):
        assert resting(reading) == AT_REST, reading


async def test_a_completed_task_reports_no_eta_and_subscribed_carries_its_result(
    api: Api, origin: Origin
) -> None:
    task = await api.submit(origin.url(size=300_000, rate=1_000_000))
    done = await api.wait_for(task["task_id"], "completed")
    for reading in await every_reading(api, task["task_id"]):
        assert resting(reading) == AT_REST, reading
        assert reading["percentage"] == 100.0
    frame = await subscribed(api, task["task_id"])
    assert frame["result"] == done["result"]
    assert frame["result"]["size_mb"] == 0.29
    assert "error" not in frame


async def test_subscribed_tells_a_late_subscriber_why_the_task_failed(
    make_api: MakeApi,
) -> None:
    api = await make_api(max_retries=1, **FAST_RETRIES)
    task = await api.submit(f"http://127.0.0.1:{free_port()}/closed-port.bin")
    failed = await api.wait_for(task["task_id"], "failed")
    frame = await subscribed(api, task["task_id"])
    assert frame["state"] == "failed"
    assert frame["error"]["type"] == "network_error"
    assert frame["error"] == failed["error"]
    assert frame["error"]["message"]
    assert "result" not in frame
    for reading in await every_reading(api, task["task_id"]):
        assert resting(reading) == AT_REST, reading


async def test_subscribed_after_a_restart_still_carries_the_outcome(
    origin: Origin, tmp_path: Path
) -> None:
    """The outcome comes from the stored record too, not only from the event just seen."""
    data = tmp_path / "data"
    key = create_key(data, "me")
    with ServerProcess(data, "--max-retries", "0") as server:
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}"}) as http:
            url = f"{server.base_url}/api/downloads"
            async with http.post(url, json={"url": origin.url(size=1000, status=404)}) as resp:
                task_id = (await resp.json())["task_id"]
            record: dict[str, Any] = {}
            for _ in range(600):
                async with http.get(f"{url}/{task_id}") as resp:
                    record = await resp.json()
                if record["state"] == "failed":
                    break
                await asyncio.sleep(0.05)
            assert record["state"] == "failed", record
            server.restart()
            async with http.ws_connect(server.ws_url) as ws:
                await ws.send_json({"action": "subscribe", "task_id": task_id})
                frame = await recv(ws)
    assert frame["event"] == "subscribed"
    assert frame["error"] == record["error"]
    assert frame["error"]["type"] == "http_error"
