"""Limits: concurrency, file size, free disk space and speed."""

from __future__ import annotations

import asyncio
import os
import time
from datetime import datetime
from pathlib import Path

import pytest

from tests.apiclient import JSON, Api
from tests.conftest import MakeApi
from tests.enginekit import (
    FAST_RETRIES,
    downloaded,
    resize_filesystem,
    sha256_file,
    small_filesystem,
)
from tests.origins import Origin, payload_sha256

# -- concurrency -------------------------------------------------------------------------


async def _most_at_once(api: Api, task_ids: list[str]) -> int:
    """Poll until every task completed; the most that were downloading at one time."""
    most = 0
    deadline = time.monotonic() + 60
    while True:
        # One listing, so every state is read at the same moment.
        listed = {t["task_id"]: t["state"] for t in await api.tasks("?limit=500")}
        states = [listed[t] for t in task_ids]
        most = max(most, states.count("downloading"))
        if all(s == "completed" for s in states):
            return most
        assert time.monotonic() < deadline, states
        await asyncio.sleep(0.05)


async def test_max_per_host_and_max_concurrent(make_api: MakeApi, origin: Origin) -> None:
    api = await make_api(max_concurrent=3, max_per_host=2)
    # ~0.8 s each, long enough to overlap.
    slow = {"size": 400_000, "rate": 500_000}
    one_host = [
        (await api.submit(origin.url(f"/file/a{i}.bin", **slow)))["task_id"] for i in range(4)
    ]
    assert await _most_at_once(api, one_host) == 2

    # "localhost" is another host to the scheduler: now the global limit of 3 is what binds.
    other = origin.url("/file/b.bin", **slow).replace("127.0.0.1", "localhost")
    mixed = [(await api.submit(origin.url(f"/file/c{i}.bin", **slow)))["task_id"] for i in range(3)]
    mixed += [(await api.submit(other.replace("b.bin", f"b{i}.bin")))["task_id"] for i in range(3)]
    assert await _most_at_once(api, mixed) == 3


# -- size ---------------------------------------------------------------------------------


async def test_max_size_refuses_a_large_content_length_up_front(
    make_api: MakeApi, origin: Origin
) -> None:
    api = await make_api(max_size=1_000_000)
    task = await api.submit(origin.url("/file/big.bin", size=5_000_000))
    failed = await api.wait_for(task["task_id"], "failed")
    assert failed["error"]["type"] == "size_limit"
    # Refused on the headers: not one byte written.
    assert not (api.settings.downloads_dir / "big.bin.part").exists()


async def test_max_size_stops_a_body_without_length(make_api: MakeApi, origin: Origin) -> None:
    api = await make_api(max_size=1_000_000)
    task = await api.submit(origin.url("/file/nl.bin", size=5_000_000, no_length=1))
    failed = await api.wait_for(task["task_id"], "failed")
    assert failed["error"]["type"] == "size_limit"
    part = api.settings.downloads_dir / "nl.bin.part"
    assert part.stat().st_size < 5_000_000


async def test_files_up_to_the_limit_are_fine(make_api: MakeApi, origin: Origin) -> None:
    api = await make_api(max_size=1_000_000)
    task = await api.submit(origin.url("/file/exact.bin", size=1_000_000, seed=3, no_length=1))
    done = await api.wait_for(task["task_id"], "completed")
    assert sha256_file(downloaded(api, done)) == payload_sha256(1_000_000, 3)


# -- disk ---------------------------------------------------------------------------------

needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="mounting a small tmpfs to fill up needs root"
)


@needs_root
async def test_not_enough_space_for_the_content_length(
    make_api: MakeApi, origin: Origin, tmp_path: Path
) -> None:
    with small_filesystem(tmp_path / "data" / "downloads", "8m"):
        api = await make_api(min_free_bytes=1_000_000)
        task = await api.submit(origin.url("/file/huge.bin", size=20_000_000))
        failed = await api.wait_for(task["task_id"], "failed")
        assert failed["error"]["type"] == "disk_error"
        assert "free" in failed["error"]["message"]
        assert not (api.settings.downloads_dir / "huge.bin.part").exists()


@needs_root
async def test_disk_filling_up_keeps_the_partial_file_for_a_retry(
    make_api: MakeApi, origin: Origin, tmp_path: Path
) -> None:
    size = 20_000_000
    with small_filesystem(tmp_path / "data" / "downloads", "8m") as disk:
        api = await make_api(min_free_bytes=1_000_000, **FAST_RETRIES)
        # No Content-Length: the up-front check cannot see it coming.
        url = origin.url("/file/fill.bin", size=size, seed=9, no_length=1, chunk=262144)
        task = await api.submit(url)
        failed = await api.wait_for(task["task_id"], "failed")
        assert failed["error"]["type"] == "disk_error"
        part = api.settings.downloads_dir / "fill.bin.part"
        kept = part.stat().st_size
        assert 1_000_000 < kept <= 8 * 2**20

        # Room made: a retry continues from the partial file instead of starting again.
        resize_filesystem(disk, "64m")
        await api.json("POST", f"/api/downloads/{task['task_id']}/retry")
        done = await api.wait_for(task["task_id"], "completed")
        assert sha256_file(downloaded(api, done)) == payload_sha256(size, 9)
        last = origin.requests_for("/file/fill.bin")[-1]
        assert last.range == f"bytes={kept}-"


# -- speed --------------------------------------------------------------------------------


def _transfer_seconds(events: list[JSON]) -> float:
    """From the first `download.started` to `download.processing`, by the server's clock."""
    stamps: dict[str, datetime] = {}
    for e in events:
        stamps.setdefault(e["event"], datetime.fromisoformat(e["timestamp"]))
    return (stamps["download.processing"] - stamps["download.started"]).total_seconds()


async def test_task_speed_limit(make_api: MakeApi, origin: Origin) -> None:
    api = await make_api()
    task = await api.submit(origin.url("/file/lim.bin", size=2_000_000, seed=4), max_speed_mbps=1)
    done = await api.wait_for(task["task_id"], "completed", within=30)
    # 2 MB at 1 MB/s: about two seconds (a small burst allowance makes it a little less).
    # Unlimited, the same transfer takes a fraction of a second here.
    assert 1.5 <= _transfer_seconds(await api.events(task["task_id"])) <= 15
    assert sha256_file(downloaded(api, done)) == payload_sha256(2_000_000, 4)


async def test_global_speed_limit_is_shared(make_api: MakeApi, origin: Origin) -> None:
    api = await make_api(speed_limit_mbps=1.0)
    started = time.monotonic()
    ids = [
        (await api.submit(origin.url(f"/file/g{i}.bin", size=1_000_000, seed=i)))["task_id"]
        for i in range(2)
    ]
    for task_id in ids:
        await api.wait_for(task_id, "completed", within=30)
    # Two 1 MB files at once through one 1 MB/s limit: about two seconds together, so
    # each of them took well over one.
    assert time.monotonic() - started >= 1.5
    for task_id in ids:
        assert _transfer_seconds(await api.events(task_id)) >= 1.2


@needs_root
async def test_a_failed_last_write_fails_the_task_instead_of_completing_it(
    make_api: MakeApi, origin: Origin, tmp_path: Path
) -> None:
    """The whole of a small file is one block, written when the body has ended: a disk
    that fills up under it must fail the task, never complete it with a short file."""
    with small_filesystem(tmp_path / "data" / "downloads", "1m") as disk:
        # Room for about 100 kB of the 300 kB: the last (and only) block cannot land.
        (disk / "filler.bin").write_bytes(b"\0" * (1024 * 1024 - 100 * 1024))
        api = await make_api(min_free_bytes=0, max_retries=1, **FAST_RETRIES)
        # No Content-Length: the up-front room check cannot see it coming.
        url = origin.url("/file/last.bin", size=300_000, seed=5, no_length=1)
        task = await api.submit(url)
        ended = await api.wait_for(task["task_id"], ("failed", "completed"))
        assert ended["state"] == "failed", ended
        assert ended["error"]["type"] == "disk_error"
        assert not (disk / "last.bin").exists()


@needs_root
async def test_a_failing_background_sync_fails_a_split_download_early(
    make_api: MakeApi, origin: Origin, tmp_path: Path
) -> None:
    """The journal's save while the transfer runs fails (the disk is full once the split
    `.part` is preallocated): the download fails then, not after fetching everything."""
    size = 4 * 2**20
    with small_filesystem(tmp_path / "data" / "downloads", "8m") as disk:
        # Room for the preallocated `.part` and the journal, and not one page more: the
        # next save of the journal (a new temp file) finds the disk full.
        (disk / "filler.bin").write_bytes(b"\0" * (8 * 2**20 - size - 4096))
        api = await make_api(segments=4, min_segment_size=500_000, **FAST_RETRIES)
        # Each connection at 500 kB/s: the whole file takes two seconds on four of them.
        url = origin.url("/file/sync.bin", size=size, seed=6, conn_rate=500_000)
        task = await api.submit(url)
        failed = await api.wait_for(task["task_id"], "failed", within=30)
        assert failed["error"]["type"] == "disk_error"
        assert origin.sent["/file/sync.bin"] < size / 2
