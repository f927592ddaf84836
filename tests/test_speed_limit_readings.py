"""Under a speed limit no progress reading overshoots it: every `speed_mbps`, the first one
included, stays within 1.1 x the task's or the server's limit (#11)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.apiclient import Api
from tests.conftest import MakeApi
from tests.origins import Origin
from tests.wsclient import WS_PATH, is_final_event, recv, recv_until

LIMIT_MBPS = 10
SIZE = 25_000_000


async def speeds_of_one_download(api: Api, url: str, **fields: Any) -> list[float]:
    ws = await api.client.ws_connect(WS_PATH, headers=api.auth())
    try:
        await ws.send_json({"action": "subscribe", "task_id": "*"})
        assert (await recv(ws))["event"] == "subscribed"
        task = await api.submit(url, **fields)
        events = await recv_until(ws, is_final_event(task["task_id"]), within=60)
    finally:
        await ws.close()
    assert events[-1]["event"] == "download.completed", events[-1]
    return [
        e["progress"]["speed_mbps"]
        for e in events
        if e["event"] == "download.progress" and e["task_id"] == task["task_id"]
    ]


def assert_within_limit(speeds: list[float]) -> None:
    moving = [s for s in speeds if s > 0]
    assert len(moving) >= 6, speeds
    assert max(speeds) <= 1.1 * LIMIT_MBPS, f"readings over 1.1 x {LIMIT_MBPS}: {speeds}"
    # And not trivially low: past the first second the limit is what the reading shows.
    settled = moving[4:-1]
    assert sum(settled) / len(settled) >= 0.8 * LIMIT_MBPS, speeds


@pytest.mark.parametrize("where", ["task", "server"])
async def test_no_reading_exceeds_the_limit(make_api: MakeApi, origin: Origin, where: str) -> None:
    if where == "task":
        api = await make_api()
        speeds = await speeds_of_one_download(api, origin.url(size=SIZE), max_speed_mbps=LIMIT_MBPS)
    else:
        api = await make_api(speed_limit_mbps=LIMIT_MBPS)
        speeds = await speeds_of_one_download(api, origin.url(size=SIZE))
    assert_within_limit(speeds)
