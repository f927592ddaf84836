"""Pause and resume, in-process and across a crash of the real server process."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.apiclient import Api, eventually
from tests.conftest import MakeApi
from tests.enginekit import downloaded, sha256_file
from tests.origins import Origin, payload_sha256
from tests.serverproc import ServerProcess, create_key


def _part(api: Api, task: dict[str, Any]) -> Path:
    return api.settings.downloads_dir / f"{task['filename']}.part"


async def test_pause_stops_the_transfer_at_once(api: Api, origin: Origin) -> None:
    task = await api.submit(origin.url("/file/p.bin", size=3_000_000, rate=1_000_000, seed=3))
    await api.wait_bytes(task["task_id"], 200_000)
    asked = time.monotonic()
    paused = await api.json("POST", f"/api/downloads/{task['task_id']}/pause")
    answered = time.monotonic() - asked
    assert paused["state"] == "paused"
    kept = _part(api, paused).stat().st_size
    # The claim is that nothing more happens once pause answered: give it time to.
    await asyncio.sleep(1.0)
    assert _part(api, paused).stat().st_size == kept
    assert answered < 5  # in practice a few milliseconds; the bound only catches a hang

    await api.json("POST", f"/api/downloads/{task['task_id']}/resume")
    done = await api.wait_for(task["task_id"], "completed")
    assert origin.requests_for("/file/p.bin")[-1].range == f"bytes={kept}-"
    assert sha256_file(downloaded(api, done)) == payload_sha256(3_000_000, 3)


async def test_pause_while_waiting_to_retry(make_api: MakeApi, origin: Origin) -> None:
    api = await make_api()
    # The origin asks for a minute's patience; pause must not wait for it, and resume
    # starts a fresh attempt at once.
    url = origin.url("/file/w.bin", size=100_000, seed=2, status=503, fail_times=1, retry_after=60)
    task = await api.submit(url)
    await eventually(lambda: _has_error(api, task["task_id"]), 30)
    paused = await api.json("POST", f"/api/downloads/{task['task_id']}/pause")
    assert paused["state"] == "paused"
    await api.json("POST", f"/api/downloads/{task['task_id']}/resume")
    done = await api.wait_for(task["task_id"], "completed", within=30)
    assert sha256_file(downloaded(api, done)) == payload_sha256(100_000, 2)


async def _has_error(api: Api, task_id: str) -> bool:
    return any(e["event"] == "download.retrying" for e in await api.events(task_id))


async def test_pause_while_the_origin_is_silent(api: Api, origin: Origin) -> None:
    url = origin.url("/file/s.bin", size=1_000_000, seed=4, stall_after=300_000, stall=60)
    task = await api.submit(url + "&stall_times=1&rate=3000000")
    await api.wait_bytes(task["task_id"], 250_000)
    paused = await api.json("POST", f"/api/downloads/{task['task_id']}/pause")
    assert paused["state"] == "paused"
    await api.json("POST", f"/api/downloads/{task['task_id']}/resume")
    done = await api.wait_for(task["task_id"], "completed", within=30)
    assert sha256_file(downloaded(api, done)) == payload_sha256(1_000_000, 4)


# -- the real server, killed -------------------------------------------------------------


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[tuple[ServerProcess, str]]:
    data_dir = tmp_path / "server"
    key = await asyncio.to_thread(create_key, data_dir, "engine")
    proc = ServerProcess(data_dir, "--min-free-space", "0")
    await asyncio.to_thread(proc.start)
    try:
        yield proc, key
    finally:
        if proc.running:
            await asyncio.to_thread(proc.kill)


class Remote:
    def __init__(self, session: aiohttp.ClientSession, base_url: str) -> None:
        self.session = session
        self.base_url = base_url

    async def call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        async with self.session.request(method, self.base_url + path, **kwargs) as resp:
            assert resp.status < 300, await resp.text()
            body: dict[str, Any] = await resp.json()
            return body

    async def wait(self, task_id: str, state: str, within: float = 60) -> dict[str, Any]:
        task: dict[str, Any] = {}

        async def reached() -> bool:
            nonlocal task
            task = await self.call("GET", f"/api/downloads/{task_id}")
            current: str = task["state"]
            return current == state

        await eventually(reached, within, lambda: f"never {state}: {task}")
        return task


async def test_paused_then_killed_then_resumed_ends_with_the_right_sha256(
    server: tuple[ServerProcess, str], origin: Origin
) -> None:
    proc, key = server
    size = 4_000_000
    url = origin.url("/file/crash.bin", size=size, seed=11, rate=1_000_000)
    downloads = proc.data_dir / "downloads"
    headers = {"Authorization": f"Bearer {key}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        remote = Remote(session, proc.base_url)
        task = await remote.call("POST", "/api/downloads", json={"url": url})
        task_id = task["task_id"]

        async def some_bytes() -> bool:
            got = await remote.call("GET", f"/api/progress/{task_id}")
            return int(got["progress"]["downloaded_bytes"]) >= 500_000

        await eventually(some_bytes, 60)
        paused = await remote.call("POST", f"/api/downloads/{task_id}/pause")
        assert paused["state"] == "paused"
        part = downloads / "crash.bin.part"
        kept = part.stat().st_size
        assert 0 < kept < size

        await asyncio.to_thread(proc.kill)  # SIGKILL: no shutdown code runs
        await asyncio.to_thread(proc.start)
        assert (await remote.call("GET", f"/api/downloads/{task_id}"))["state"] == "paused"
        assert part.stat().st_size == kept

        await remote.call("POST", f"/api/downloads/{task_id}/resume")
        done = await remote.wait(task_id, "completed")

    assert sha256_file(downloads / done["filename"]) == payload_sha256(size, 11)
    assert origin.requests_for("/file/crash.bin")[-1].range == f"bytes={kept}-"


async def test_killed_mid_download_continues_after_restart(
    server: tuple[ServerProcess, str], origin: Origin
) -> None:
    proc, key = server
    size = 4_000_000
    url = origin.url("/file/kill.bin", size=size, seed=12, rate=1_000_000)
    headers = {"Authorization": f"Bearer {key}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        remote = Remote(session, proc.base_url)
        task = await remote.call("POST", "/api/downloads", json={"url": url})
        task_id = task["task_id"]
        part = proc.data_dir / "downloads" / "kill.bin.part"
        await eventually(lambda: _bigger_than(part, 1_500_000), 60)

        await asyncio.to_thread(proc.kill)
        kept = part.stat().st_size
        await asyncio.to_thread(proc.start)
        done = await remote.wait(task_id, "completed")

    assert sha256_file(proc.data_dir / "downloads" / done["filename"]) == payload_sha256(size, 12)
    resumed = origin.requests_for("/file/kill.bin")[-1]
    # The .part file is the truth after a crash: the restart asks for what it lacks.
    assert resumed.range == f"bytes={kept}-"


async def _bigger_than(path: Path, size: int) -> bool:
    return path.exists() and path.stat().st_size > size
