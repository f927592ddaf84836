"""GET /api/progress: the guide's polling response, its ETag, the batch form and the units."""

from __future__ import annotations

import asyncio
import re
import uuid
from typing import Any

from tests.apiclient import Api, eventually
from tests.conftest import MakeApi
from tests.origins import Origin

ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
PROGRESS_KEYS = {"percentage", "downloaded_bytes", "total_bytes", "speed_mbps", "eta_seconds"}


def assert_polling_shape(polled: dict[str, Any], task_id: str) -> None:
    """Exactly the guide's keys and JSON types, nothing renamed, moved or dropped."""
    assert set(polled) == {"task_id", "state", "progress", "timestamp"}
    assert polled["task_id"] == task_id
    assert polled["state"] in {
        "pending",
        "downloading",
        "processing",
        "completed",
        "failed",
        "cancelled",
        "paused",
    }
    assert ISO_Z.match(polled["timestamp"]), polled["timestamp"]
    progress = polled["progress"]
    assert set(progress) == PROGRESS_KEYS
    assert type(progress["downloaded_bytes"]) is int
    assert type(progress["speed_mbps"]) in (int, float)
    for name, kind in (("total_bytes", int), ("percentage", float), ("eta_seconds", int)):
        assert progress[name] is None or type(progress[name]) is kind, (name, progress)
    if progress["percentage"] is not None:
        assert 0 <= progress["percentage"] <= 100
        # One decimal, as the guide's 45.5.
        assert round(progress["percentage"], 1) == progress["percentage"]


async def test_polling_shape_through_a_download(api: Api, origin: Origin) -> None:
    size = 2_000_000
    task = await api.submit(origin.url(size=size, rate=1_000_000))
    task_id = task["task_id"]
    first = await api.progress(task_id)
    assert_polling_shape(first, task_id)

    mid = (await api.wait_bytes(task_id, 200_000))["progress"]
    assert mid["total_bytes"] == size
    polled = await api.progress(task_id)
    assert_polling_shape(polled, task_id)
    assert polled["state"] == "downloading"
    assert polled["progress"]["total_bytes"] == size
    assert 0 < polled["progress"]["percentage"] < 100
    assert polled["progress"]["eta_seconds"] is not None
    assert polled["progress"]["speed_mbps"] > 0

    await api.wait_for(task_id, "completed")
    done = await api.progress(task_id)
    assert_polling_shape(done, task_id)
    assert done["state"] == "completed"
    assert done["progress"]["downloaded_bytes"] == size
    assert done["progress"]["percentage"] == 100.0
    # Not downloading any more: no speed, no ETA (#11).
    assert done["progress"]["eta_seconds"] is None
    assert done["progress"]["speed_mbps"] == 0


async def test_etag_answers_304_until_the_snapshot_changes(api: Api, origin: Origin) -> None:
    task = await api.submit(origin.url(size=3_000_000, rate=1_000_000))
    path = f"/api/progress/{task['task_id']}"
    await api.wait_bytes(task["task_id"], 1)

    resp = await api.call("GET", path)
    etag = resp.headers["ETag"]
    again = await api.call("GET", path, headers={"If-None-Match": etag})
    # Mid-transfer the snapshot moves every progress interval: 304 or a new ETag, never
    # a 200 carrying the same ETag.
    assert again.status == 304 or again.headers["ETag"] != etag

    other = await api.call("GET", path, headers={"If-None-Match": '"something-else"'})
    assert other.status == 200

    await api.wait_for(task["task_id"], "completed")
    done = await api.call("GET", path)
    final_etag = done.headers["ETag"]
    final_body = await done.json()
    assert final_etag != etag
    await asyncio.sleep(0.6)  # a few progress intervals: an idle task must not change
    same = await api.call("GET", path)
    assert same.headers["ETag"] == final_etag
    assert await same.json() == final_body
    not_modified = await api.call("GET", path, headers={"If-None-Match": final_etag})
    assert not_modified.status == 304
    assert await not_modified.read() == b""
    assert not_modified.headers["ETag"] == final_etag


async def test_batch_polling(api: Api, origin: Origin) -> None:
    other_key = await api.new_key("other")
    one = await api.submit(origin.url(size=1000, seed=1))
    two = await api.submit(origin.url(size=1000, seed=2))
    foreign = await api.submit(origin.url(size=1000, seed=3), key=other_key)
    for task in (one, two):
        await api.wait_for(task["task_id"], "completed")
    unknown = str(uuid.uuid4())
    ids = [one["task_id"], two["task_id"], foreign["task_id"], unknown, one["task_id"]]
    query = "&".join(f"task_id={i}" for i in ids)
    resp = await api.call("GET", f"/api/progress?{query}")
    assert resp.status == 200
    body = await resp.json()
    assert set(body) == {"tasks", "missing"}
    assert [t["task_id"] for t in body["tasks"]] == [one["task_id"], two["task_id"]]
    # Another key's task and one that does not exist are named alike, in the order asked,
    # so a client learns which ids to stop polling without learning which ones exist (#11).
    assert body["missing"] == [foreign["task_id"], unknown]
    for polled in body["tasks"]:
        assert_polling_shape(polled, polled["task_id"])
        assert polled == await api.progress(polled["task_id"])
    cached = await api.call(
        "GET", f"/api/progress?{query}", headers={"If-None-Match": resp.headers["ETag"]}
    )
    assert cached.status == 304


async def test_batch_polling_names_a_task_deleted_since_the_last_poll(
    api: Api, origin: Origin
) -> None:
    one = await api.submit(origin.url(size=1000, seed=1))
    two = await api.submit(origin.url(size=1000, seed=2))
    for task in (one, two):
        await api.wait_for(task["task_id"], "completed")
    query = f"task_id={one['task_id']}&task_id={two['task_id']}"
    first = await api.call("GET", f"/api/progress?{query}")
    assert (await first.json())["missing"] == []
    await api.json("DELETE", f"/api/downloads/{two['task_id']}", 204)
    after = await api.call(
        "GET", f"/api/progress?{query}", headers={"If-None-Match": first.headers["ETag"]}
    )
    assert after.status == 200
    body = await after.json()
    assert [t["task_id"] for t in body["tasks"]] == [one["task_id"]]
    assert body["missing"] == [two["task_id"]]


async def test_unknown_length_gives_nulls_not_zeros(api: Api, origin: Origin) -> None:
    size = 1_500_000
    task = await api.submit(origin.url(size=size, rate=500_000, no_length=1))
    task_id = task["task_id"]
    await api.wait_bytes(task_id, 100_000)
    polled = await api.progress(task_id)
    assert_polling_shape(polled, task_id)
    assert polled["state"] == "downloading"
    progress = polled["progress"]
    assert progress["total_bytes"] is None
    assert progress["percentage"] is None
    assert progress["eta_seconds"] is None
    assert progress["downloaded_bytes"] > 0
    assert progress["speed_mbps"] > 0
    done = await api.wait_for(task_id, "completed")
    # Once the end is known, so is the size.
    assert done["progress"]["total_bytes"] == size
    assert done["progress"]["percentage"] == 100.0


async def test_speed_reads_the_origins_steady_rate(make_api: MakeApi, origin: Origin) -> None:
    # One connection: the origin's rate is per response, so a split download (28 MB is
    # big enough) would read as several times that rate.
    api = await make_api(segments=1)
    rate = 4_000_000
    task = await api.submit(origin.url(size=7 * rate, rate=rate))
    task_id = task["task_id"]
    await api.wait_bytes(task_id, 2 * rate)  # past the ramp-up
    readings: list[float] = []

    async def sampled() -> bool:
        polled = await api.progress(task_id)
        if polled["state"] != "downloading":
            raise AssertionError(f"finished before enough samples: {readings}")
        readings.append(polled["progress"]["speed_mbps"])
        eta = polled["progress"]["eta_seconds"]
        remaining = 7 * rate - polled["progress"]["downloaded_bytes"]
        # ETA follows from the smoothed speed, within a second of rounding up.
        assert eta is not None and abs(eta - remaining / rate) <= 1.5, (eta, remaining)
        await asyncio.sleep(0.4)
        return len(readings) >= 5

    await eventually(sampled, within=30)
    assert all(3.6 <= r <= 4.4 for r in readings), readings
