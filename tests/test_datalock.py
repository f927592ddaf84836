"""One server per data folder: a second `serve` on it stops at once and touches nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from progress_server.client import Event, ProgressClient
from tests.origins import Origin
from tests.serverproc import ServerProcess, create_key


async def _until_started(client: ProgressClient, task_id: str) -> AsyncIterator[Event]:
    async with client.subscribe([task_id]) as events:
        async for event in events:
            if event.get("state") == "downloading":
                yield event
                return


async def test_a_second_server_on_the_same_folder_refuses_to_start(
    tmp_path: Path, origin: Origin
) -> None:
    data = tmp_path / "data"
    key = create_key(data, "owner")
    with ServerProcess(data) as first:
        async with ProgressClient(first.base_url, key) as client:
            task = await client.create(origin.url("/file/busy.bin", size=3_000_000, rate=300_000))
            [started] = [e async for e in _until_started(client, task["task_id"])]
            assert started["state"] == "downloading"
            before = await client.events(task["task_id"])

            second = ServerProcess(data)
            try:
                with pytest.raises(RuntimeError) as refused:
                    await asyncio.to_thread(second.start)
            finally:
                if second.running:  # it started after all: the test fails, without a leak
                    second.kill()
            assert "already using" in str(refused.value)
            assert "Traceback" not in second.log_text()

            # The first server's task was not recovered, re-queued or touched by the second.
            assert await client.events(task["task_id"]) == before
            assert (await client.get(task["task_id"]))["state"] == "downloading"
            await client.cancel(task["task_id"])

    # Once the first one is gone, the folder is free again.
    with ServerProcess(data) as again:
        assert again.running
