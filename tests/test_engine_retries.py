"""Retries: what is retried, how long between attempts, and that each retry resumes."""

from __future__ import annotations

import time
from email.utils import formatdate

import aiohttp
import pytest

from progress_server.engine import Downloader
from progress_server.settings import Settings
from tests.apiclient import Api
from tests.conftest import MakeApi
from tests.enginekit import FAST_RETRIES, downloaded, errors, restarts, sha256_file
from tests.origins import Origin, payload_sha256
from tests.serverproc import free_port

SIZE = 400_000


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
async def test_retryable_statuses_are_retried_until_they_succeed(
    make_api: MakeApi, origin: Origin, status: int
) -> None:
    api = await make_api(**FAST_RETRIES)
    url = origin.url("/file/r.bin", size=SIZE, seed=status, status=status, fail_times=2)
    task = await api.submit(url)
    done = await api.wait_for(task["task_id"], "completed")

    assert sha256_file(downloaded(api, done)) == payload_sha256(SIZE, status)
    failures = errors(await api.events(task["task_id"]))
    assert [e["attempt"] for e in failures] == [1, 2]
    for event in failures:
        assert event["state"] == "downloading"
        assert event["error"]["type"] == "http_error"
        assert event["retryable"] is True
        assert str(status) in event["error"]["message"]
    assert origin.count("/file/r.bin") == 3


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410, 451])
async def test_other_client_errors_fail_at_once(
    make_api: MakeApi, origin: Origin, status: int
) -> None:
    api = await make_api(**FAST_RETRIES)
    task = await api.submit(origin.url("/file/x.bin", status=status))
    failed = await api.wait_for(task["task_id"], "failed")

    assert failed["error"]["type"] == "http_error"
    assert origin.count("/file/x.bin") == 1
    (only,) = errors(await api.events(task["task_id"]))
    assert only["state"] == "failed"
    assert only["error"]["retryable"] is False
    assert only["error"]["status"] == status


async def test_retries_are_spent_then_the_task_fails(make_api: MakeApi, origin: Origin) -> None:
    api = await make_api(max_retries=2, **FAST_RETRIES)
    task = await api.submit(origin.url("/file/down.bin", status=503))
    failed = await api.wait_for(task["task_id"], "failed")

    assert failed["error"]["type"] == "http_error"
    failures = errors(await api.events(task["task_id"]))
    assert [(e["state"], e["retryable"], e["attempt"]) for e in failures] == [
        ("downloading", True, 1),
        ("downloading", True, 2),
        ("failed", False, 3),
    ]
    assert failures[-1]["error"]["retryable"] is False
    assert origin.count("/file/down.bin") == 3


async def test_zero_retries_fails_on_the_first_error(make_api: MakeApi, origin: Origin) -> None:
    api = await make_api(max_retries=0, **FAST_RETRIES)
    task = await api.submit(origin.url("/file/once.bin", status=502, fail_times=1))
    await api.wait_for(task["task_id"], "failed")
    assert origin.count("/file/once.bin") == 1


async def test_retry_after_seconds_is_honoured(make_api: MakeApi, origin: Origin) -> None:
    api = await make_api(**FAST_RETRIES)
    url = origin.url("/file/ra.bin", size=SIZE, status=503, fail_times=1, retry_after=1)
    started = time.monotonic()
    task = await api.submit(url)
    await api.wait_for(task["task_id"], "completed")

    # The backoff alone would have retried after ~20 ms; the origin asked for a second.
    assert time.monotonic() - started >= 0.9
    (failure,) = errors(await api.events(task["task_id"]))
    assert failure["retry_in_seconds"] == 1.0


async def test_retry_after_http_date_is_honoured(make_api: MakeApi, origin: Origin) -> None:
    api = await make_api(**FAST_RETRIES)
    when = formatdate(time.time() + 3, usegmt=True)
    url = origin.url("/file/rd.bin", size=SIZE, status=429, fail_times=1, retry_after=when)
    task = await api.submit(url)
    await api.wait_for(task["task_id"], "completed")

    (failure,) = errors(await api.events(task["task_id"]))
    # HTTP dates have whole seconds: 3 s ahead reads as a little over 2 up to 3.
    assert 1.0 <= failure["retry_in_seconds"] <= 3.0


async def test_each_retry_resumes_from_the_bytes_on_disk(make_api: MakeApi, origin: Origin) -> None:
    api = await make_api(**FAST_RETRIES)
    size = 1_500_000
    # Each of the first two bodies pauses a second one byte before the origin hangs up, so
    # even a loaded machine has written what arrived (aiohttp drops what is still in its
    # buffer when a connection breaks).
    url = origin.url(
        "/file/drop.bin",
        size=size,
        seed=5,
        drop_after=500_000,
        drop_times=2,
        stall_after=499_999,
        stall=1,
        stall_times=2,
    )
    task = await api.submit(url)
    done = await api.wait_for(task["task_id"], "completed")

    assert sha256_file(downloaded(api, done)) == payload_sha256(size, 5)
    requests = origin.requests_for("/file/drop.bin")
    assert [r.range is None for r in requests] == [True, False, False]
    offsets = [int(str(r.range).removeprefix("bytes=").rstrip("-")) for r in requests[1:]]
    # Each retry asks only for what is missing, against the first response's ETag.
    assert 0 < offsets[0] <= 500_000
    assert offsets[0] < offsets[1] <= offsets[0] + 500_000
    assert all(r.headers.get("If-Range") == '"5-1500000-0"' for r in requests[1:])
    events = await api.events(task["task_id"])
    assert {e["error"]["type"] for e in errors(events)} == {"network_error"}
    assert restarts(events) == []


async def test_unreachable_origin_is_a_retried_network_error(make_api: MakeApi) -> None:
    api: Api = await make_api(max_retries=1, **FAST_RETRIES)
    task = await api.submit(f"http://127.0.0.1:{free_port()}/nothing.bin")
    failed = await api.wait_for(task["task_id"], "failed")

    assert failed["error"]["type"] == "network_error"
    failures = errors(await api.events(task["task_id"]))
    assert [e["retryable"] for e in failures] == [
        True,
        False,
    ]


async def test_backoff_grows_exponentially_with_jitter_and_caps() -> None:
    settings = Settings(retry_base_delay=1.0, retry_max_delay=10.0)
    async with aiohttp.ClientSession() as session:
        downloader = Downloader(settings, session=session)
        for attempt, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 10.0), (9, 10.0)]:
            delays = {downloader.backoff(attempt, None) for _ in range(200)}
            assert all(ceiling / 2 <= d <= ceiling for d in delays)
            # Jitter: many different delays, so clients that failed together do not retry
            # together.
            assert len(delays) > 50
        assert downloader.backoff(1, 7.0) == 7.0
        assert downloader.backoff(1, 10_000.0) == 600.0
