"""kill -9 of the real server in the middle of a split download: after the restart every
unfinished segment continues from its own offset, and the origin sends little more than
the file once."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.apiclient import eventually
from tests.origins import Origin, payload_sha256
from tests.serverproc import ServerProcess, create_key

SIZE = 24_000_000


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[tuple[ServerProcess, str]]:
    data_dir = tmp_path / "server"
    key = await asyncio.to_thread(create_key, data_dir, "engine")
    proc = ServerProcess(
        data_dir, "--min-free-space", "0", "--segments", "4", "--min-segment-size", "1048576"
    )
    await asyncio.to_thread(proc.start)
    try:
        yield proc, key
    finally:
        if proc.running:
            await asyncio.to_thread(proc.kill)


async def _call(session: aiohttp.ClientSession, method: str, url: str, **kw: Any) -> Any:
    async with session.request(method, url, **kw) as resp:
        assert resp.status < 300, await resp.text()
        return await resp.json()


def _start(range_header: str) -> int:
    found = re.fullmatch(r"bytes=(\d+)-(\d*)", range_header)
    assert found, range_header
    return int(found[1])


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


async def test_kill_9_resumes_every_segment_from_its_own_offset(
    server: tuple[ServerProcess, str], origin: Origin
) -> None:
    proc, key = server
    # Four connections at 0.75 MB/s each: eight seconds in all, so the little a kill
    # costs (bytes that arrived after the last journal save) is a small part of the file.
    url = origin.url("/file/crash.bin", size=SIZE, seed=21, conn_rate=750_000)
    downloads = proc.data_dir / "downloads"
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}"}) as session:
        base = proc.base_url
        task = await _call(session, "POST", f"{base}/api/downloads", json={"url": url})
        task_id = task["task_id"]

        async def a_third_done() -> bool:
            got = await _call(session, "GET", f"{base}/api/progress/{task_id}")
            return int(got["progress"]["downloaded_bytes"]) >= SIZE // 3

        await eventually(a_third_done, 60, proc.log_tail)
        assert origin.peak_in_flight["/file/crash.bin"] == 4
        await asyncio.to_thread(proc.kill)  # SIGKILL: no shutdown code runs
        journal = downloads / "crash.bin.part.segments"
        assert journal.exists()
        before = len(origin.requests_for("/file/crash.bin"))

        await asyncio.to_thread(proc.start)

        async def completed() -> bool:
            got = await _call(session, "GET", f"{base}/api/downloads/{task_id}")
            assert got["state"] not in ("failed", "cancelled"), got
            return bool(got["state"] == "completed")

        await eventually(completed, 60, proc.log_tail)
        done = await _call(session, "GET", f"{base}/api/downloads/{task_id}")

    assert _sha256(downloads / done["filename"]) == payload_sha256(SIZE, 21)
    requests = origin.requests_for("/file/crash.bin")
    # The segments: from 0, and from where each of the three extra connections began.
    bounds = sorted([0, *(_start(r.range) for r in requests[:before] if r.range)][:4])
    bounds.append(SIZE)
    resumed = []
    for request in requests[before:]:
        assert request.range, "a request after the restart asked for the whole file"
        resumed.append(_start(request.range))
    # Each segment's first request after the restart starts inside it, where it stopped.
    for start, stop in itertools.pairwise(bounds):
        firsts = [r for r in resumed if start <= r < stop]
        assert firsts and start < firsts[0], (bounds, resumed)
    # Lost to the kill: what arrived after the last journal save, and socket buffers.
    assert origin.sent["/file/crash.bin"] <= SIZE * 1.1
    assert not journal.exists()
