"""Stalls and slow origins end an attempt as `timeout`, which is then retried."""

from __future__ import annotations

import socket

from tests.conftest import MakeApi
from tests.enginekit import FAST_RETRIES, downloaded, errors, sha256_file
from tests.origins import Origin, payload_sha256

SIZE = 600_000


async def test_a_stalled_body_times_out_and_the_retry_resumes(
    make_api: MakeApi, origin: Origin
) -> None:
    api = await make_api(stall_timeout=1.0, **FAST_RETRIES)
    # The first response stops after 300 kB for a minute; the second one is fine.
    url = origin.url(
        "/file/stall.bin", size=SIZE, seed=6, stall_after=300_000, stall=60, stall_times=1
    )
    task = await api.submit(url + "&rate=3000000")
    done = await api.wait_for(task["task_id"], "completed", within=30)

    assert sha256_file(downloaded(api, done)) == payload_sha256(SIZE, 6)
    (failure,) = errors(await api.events(task["task_id"]))
    assert failure["error"]["type"] == "timeout"
    assert failure["retryable"] is True
    assert "no data" in failure["error"]["message"]
    second = origin.requests_for("/file/stall.bin")[1]
    assert second.range is not None and int(second.range[6:-1]) > 100_000


async def test_too_slow_for_too_long_is_a_timeout(make_api: MakeApi, origin: Origin) -> None:
    api = await make_api(stall_timeout=1.0, min_speed_bps=200_000, max_retries=1, **FAST_RETRIES)
    # 50 kB/s: bytes keep coming, but a quarter of the minimum speed.
    task = await api.submit(origin.url("/file/slow.bin", size=SIZE, rate=50_000, chunk=5000))
    failed = await api.wait_for(task["task_id"], "failed", within=30)

    assert failed["error"]["type"] == "timeout"
    assert "slower than 200 kB/s" in failed["error"]["message"]
    assert [e["error"]["type"] for e in errors(await api.events(task["task_id"]))] == [
        "timeout",
        "timeout",
    ]


async def test_slow_but_above_the_minimum_completes(make_api: MakeApi, origin: Origin) -> None:
    api = await make_api(stall_timeout=0.5, min_speed_bps=100_000, max_retries=0)
    task = await api.submit(origin.url("/file/ok.bin", size=SIZE, seed=1, rate=600_000))
    done = await api.wait_for(task["task_id"], "completed", within=30)
    assert sha256_file(downloaded(api, done)) == payload_sha256(SIZE, 1)


async def test_own_speed_limit_is_not_mistaken_for_a_slow_origin(
    make_api: MakeApi, origin: Origin
) -> None:
    # The task's own limit (0.1 MB/s) is below --min-speed: the wait is ours, not the origin's.
    api = await make_api(stall_timeout=0.5, min_speed_bps=500_000, max_retries=0)
    url = origin.url("/file/own.bin", size=200_000, seed=2)
    task = await api.submit(url, max_speed_mbps=0.1)
    done = await api.wait_for(task["task_id"], "completed", within=30)
    assert sha256_file(downloaded(api, done)) == payload_sha256(200_000, 2)


async def test_no_response_headers_is_a_read_timeout(make_api: MakeApi, origin: Origin) -> None:
    api = await make_api(read_timeout=0.5, max_retries=0)
    # Nothing at all (not even the headers) for a minute.
    task = await api.submit(origin.url("/file/mute.bin", size=SIZE, stall_after=0, stall=60))
    failed = await api.wait_for(task["task_id"], "failed", within=30)
    assert failed["error"]["type"] == "timeout"


async def test_an_origin_that_never_accepts_is_a_connect_timeout(make_api: MakeApi) -> None:
    api = await make_api(connect_timeout=0.5, max_retries=1, **FAST_RETRIES)
    # A listening socket whose backlog one connection fills: the next SYN goes unanswered.
    with socket.socket() as listener, socket.socket() as filler:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        filler.connect(("127.0.0.1", port))
        task = await api.submit(f"http://127.0.0.1:{port}/never.bin")
        failed = await api.wait_for(task["task_id"], "failed", within=30)
    assert failed["error"]["type"] == "timeout"
    assert failed["error"]["message"] == "could not connect within 0.5 s"
    assert [e["retryable"] for e in errors(await api.events(task["task_id"]))] == [True, False]
