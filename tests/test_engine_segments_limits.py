"""Split downloads under limits: the per-host connection cap across tasks, one speed limit
shared by a task's connections, and a stall watchdog per connection."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from tests.apiclient import JSON
from tests.conftest import MakeApi
from tests.enginekit import FAST_RETRIES, downloaded, errors, sha256_file
from tests.origins import Origin, payload_sha256

SIZE = 4_000_000
SPLIT: dict[str, Any] = {"segments": 4, "min_segment_size": 500_000, **FAST_RETRIES}


def transfer_seconds(events: list[JSON]) -> float:
    stamps: dict[str, datetime] = {}
    for e in events:
        stamps.setdefault(e["event"], datetime.fromisoformat(e["timestamp"]))
    return (stamps["download.processing"] - stamps["download.started"]).total_seconds()


async def test_connections_per_host_are_capped_across_tasks(
    make_api: MakeApi, origin: Origin
) -> None:
    api = await make_api(max_connections_per_host=5, max_per_host=2, **SPLIT)
    tasks = [
        await api.submit(origin.url(f"/file/h{i}.bin", size=SIZE, seed=i, conn_rate=1_000_000))
        for i in range(2)
    ]
    for task in tasks:
        done = await api.wait_for(task["task_id"], "completed")
        seed = int(done["filename"][1])
        assert sha256_file(downloaded(api, done)) == payload_sha256(SIZE, seed)
    # Two first connections (never held back) and three extras between them: not 8.
    assert origin.peak_total_in_flight == 5
    assert origin.peak_in_flight["/file/h0.bin"] + origin.peak_in_flight["/file/h1.bin"] >= 5


async def test_a_task_speed_limit_is_shared_by_its_connections(
    make_api: MakeApi, origin: Origin
) -> None:
    api = await make_api(**SPLIT)
    # Each connection may have 1 MB/s; the task as a whole only 2.5 MB/s.
    url = origin.url("/file/lim.bin", size=SIZE, seed=3, conn_rate=1_000_000)
    task = await api.submit(url, max_speed_mbps=2.5)
    done = await api.wait_for(task["task_id"], "completed")

    assert sha256_file(downloaded(api, done)) == payload_sha256(SIZE, 3)
    assert origin.peak_in_flight["/file/lim.bin"] >= 3  # split: one connection is slower
    # 4 MB at 2.5 MB/s is 1.6 s (less a small burst); four connections unshared: 1 s.
    assert transfer_seconds(await api.events(task["task_id"])) >= 1.4


async def test_a_stalled_connection_is_replaced_while_the_others_go_on(
    make_api: MakeApi, origin: Origin
) -> None:
    api = await make_api(stall_timeout=1.0, **SPLIT)
    size = 2 * SIZE  # four segments of 2 MB: two seconds each, so the others outlast
    # The first response stops for a minute after 100 kB; every other one is fine.
    url = origin.url(
        "/file/st.bin",
        size=size,
        seed=4,
        conn_rate=1_000_000,
        stall_after=100_000,
        stall=60,
        stall_times=1,
    )
    task = await api.submit(url)
    done = await api.wait_for(task["task_id"], "completed", within=30)

    assert sha256_file(downloaded(api, done)) == payload_sha256(size, 4)
    # The stalled connection's segment went on exactly where its bytes stopped ...
    assert "bytes=100000-" in {r.range.rsplit("-", 1)[0] + "-" for r in _ranged(origin)}
    # ... and the task never failed an attempt: the other connections kept it going.
    assert errors(await api.events(task["task_id"])) == []


def _ranged(origin: Origin) -> list[Any]:
    return [r for r in origin.requests_for("/file/st.bin") if r.range is not None]
