"""Restart: the real server, killed or stopped mid-download, continues from its `.part` file.

The origin runs in the test's event loop, so every blocking ServerProcess call goes through
a thread: the origin must keep serving while the server starts and stops.
"""

from __future__ import annotations

import asyncio
import hashlib
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from click.testing import CliRunner

from progress_server.cli import main
from tests.apiclient import eventually, read_only_db
from tests.origins import Origin, payload_sha256, payload_slice
from tests.serverproc import ServerProcess

SIZE = 4_000_000
RATE = 2_000_000


class Client:
    def __init__(self, server: ServerProcess, key: str, session: aiohttp.ClientSession) -> None:
        self.server = server
        self.key = key
        self.session = session

    async def get(self, path: str) -> dict[str, Any]:
        async with self.session.get(
            self.server.base_url + path, headers={"Authorization": f"Bearer {self.key}"}
        ) as resp:
            assert resp.status == 200, await resp.text()
            body: dict[str, Any] = await resp.json()
            return body

    async def submit(self, url: str) -> str:
        async with self.session.post(
            self.server.base_url + "/api/downloads",
            json={"url": url},
            headers={"Authorization": f"Bearer {self.key}"},
        ) as resp:
            assert resp.status == 201, await resp.text()
            task_id: str = (await resp.json())["task_id"]
            return task_id

    async def wait(self, task_id: str, state: str, within: float = 60) -> dict[str, Any]:
        task: dict[str, Any] = {}

        async def reached() -> bool:
            nonlocal task
            task = await self.get(f"/api/downloads/{task_id}")
            assert task["state"] not in {"failed", "cancelled"} - {state}, task
            return bool(task["state"] == state)

        await eventually(reached, within, lambda: f"{state} not reached: {task}\n{self.log()}")
        return task

    async def wait_bytes(self, task_id: str, at_least: int) -> None:
        async def enough() -> bool:
            task = await self.get(f"/api/downloads/{task_id}")
            return int(task["progress"]["downloaded_bytes"]) >= at_least

        await eventually(enough, 60, self.log)

    async def seqs(self) -> list[int]:
        return [e["seq"] for e in (await self.get("/api/events?after_seq=0"))["events"]]

    def log(self) -> str:
        return self.server.log_tail()


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[Client]:
    data = tmp_path / "data"
    # The CLI's own code in-process: a second interpreter would only add start-up time.
    made = await asyncio.to_thread(
        CliRunner().invoke, main, ["keys", "create", "restart", "--data-dir", str(data)]
    )
    assert made.exit_code == 0, made.output
    key = made.stdout.strip().splitlines()[-1]
    server = ServerProcess(data)
    await asyncio.to_thread(server.start)
    try:
        async with aiohttp.ClientSession() as session:
            yield Client(server, key, session)
    finally:
        if server.running:
            await asyncio.to_thread(server.kill)


def part_of(client: Client, task: dict[str, Any]) -> Path:
    return client.server.data_dir / "downloads" / f"{task['filename']}.part"


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def interrupt_mid_download(
    client: Client, origin: Origin, url: str, how: str
) -> tuple[str, int, list[int]]:
    """Start a download, interrupt the server half way; (task id, .part size, seqs before)."""
    task_id = await client.submit(url)
    await client.wait_bytes(task_id, SIZE // 4)
    before = await client.seqs()
    task = await client.get(f"/api/downloads/{task_id}")
    if how == "kill":
        await asyncio.to_thread(client.server.kill)
    else:
        started = time.monotonic()
        code = await asyncio.to_thread(client.server.stop, signal.SIGTERM, 10)
        assert code == 0, client.log()
        assert time.monotonic() - started < 10
    kept = part_of(client, task).stat().st_size
    assert 0 < kept < SIZE
    return task_id, kept, before


@pytest.mark.parametrize("how", ["kill", "term"])
async def test_interrupted_download_resumes_from_its_part_file(
    client: Client, origin: Origin, how: str
) -> None:
    url = origin.url("/file/big.bin", size=SIZE, rate=RATE, seed=11)
    task_id, kept, before = await interrupt_mid_download(client, origin, url, how)
    if how == "term":
        # A clean stop persisted how far the transfer got, matching the file on disk.
        with read_only_db(client.server.data_dir / "progress.db") as db:
            row = db.execute(
                "SELECT state, downloaded_bytes FROM tasks WHERE task_id = ?", (task_id,)
            ).fetchone()
        assert row == ("downloading", kept)
    requests_before = len(origin.requests)

    await asyncio.to_thread(client.server.start)
    done = await client.wait(task_id, "completed")
    resumed = origin.requests[requests_before:]
    assert [r.range for r in resumed] == [f"bytes={kept}-"], client.log()
    assert resumed[0].headers.get("If-Range") == f'"11-{SIZE}-0"'
    final = client.server.data_dir / "downloads" / done["filename"]
    assert sha256_file(final) == payload_sha256(SIZE, 11)

    after = await client.seqs()
    assert after == sorted(set(after))
    assert after[: len(before)] == before
    assert min(after[len(before) :]) > max(before)
    events = (await client.get(f"/api/downloads/{task_id}/events"))["events"]
    assert any(e.get("recovered") for e in events if e["event"] == "download.queued")


async def test_origin_without_ranges_restarts_from_zero(client: Client, origin: Origin) -> None:
    url = origin.url("/file/norange.bin", size=SIZE, rate=RATE, seed=12, no_range=1)
    task_id, _, _ = await interrupt_mid_download(client, origin, url, "kill")
    await asyncio.to_thread(client.server.start)
    done = await client.wait(task_id, "completed")
    final = client.server.data_dir / "downloads" / done["filename"]
    assert sha256_file(final) == payload_sha256(SIZE, 12)
    events = (await client.get(f"/api/downloads/{task_id}/events"))["events"]
    assert any(e.get("restarted_from_zero") for e in events), events


async def test_changed_file_on_the_origin_restarts_from_zero(
    client: Client, origin: Origin
) -> None:
    url = origin.url("/file/changing.bin", size=SIZE, rate=RATE, seed=13, change_content=1)
    task_id, kept, _ = await interrupt_mid_download(client, origin, url, "kill")
    requests_before = len(origin.requests)
    await asyncio.to_thread(client.server.start)
    done = await client.wait(task_id, "completed")
    resumed = origin.requests[requests_before:]
    # The server asked to resume, but If-Range no longer matched: the origin sent the new
    # version whole, and that is what was kept, not a splice of two versions.
    assert resumed[0].range == f"bytes={kept}-"
    final = client.server.data_dir / "downloads" / done["filename"]
    version = origin.count("/file/changing.bin")
    assert sha256_file(final) == payload_sha256(SIZE, 13 + version)


async def test_crash_after_the_last_byte_but_before_the_rename(
    client: Client, origin: Origin
) -> None:
    url = origin.url("/file/whole.bin", size=SIZE, rate=RATE, seed=14)
    task_id, kept, _ = await interrupt_mid_download(client, origin, url, "kill")
    part = client.server.data_dir / "downloads" / "whole.bin.part"
    # Leave the disk as a crash between the last write and the rename would: every byte in
    # the .part file, no final file.
    with part.open("ab") as f:
        f.write(payload_slice(kept, SIZE, 14))
    requests_before = len(origin.requests)
    await asyncio.to_thread(client.server.start)
    done = await client.wait(task_id, "completed")
    assert [r.range for r in origin.requests[requests_before:]] == [f"bytes={SIZE}-"]
    final = client.server.data_dir / "downloads" / done["filename"]
    assert sha256_file(final) == payload_sha256(SIZE, 14)
    assert not part.exists()


async def test_crash_after_the_rename_goes_straight_to_processing(
    client: Client, origin: Origin
) -> None:
    url = origin.url("/file/renamed.bin", size=SIZE, rate=RATE, seed=15)
    task_id, kept, _ = await interrupt_mid_download(client, origin, url, "kill")
    downloads = client.server.data_dir / "downloads"
    # As a crash right after the rename leaves it: the whole file in place, no .part.
    part = downloads / "renamed.bin.part"
    with part.open("ab") as f:
        f.write(payload_slice(kept, SIZE, 15))
    part.replace(downloads / "renamed.bin")
    requests_before = len(origin.requests)
    await asyncio.to_thread(client.server.start)
    done = await client.wait(task_id, "completed")
    assert origin.requests[requests_before:] == [], "a finished file was fetched again"
    assert done["filename"] == "renamed.bin"
    assert sha256_file(downloads / "renamed.bin") == payload_sha256(SIZE, 15)
