"""A failed attempt that will be retried is `download.retrying`; `download.error` is sent
once, when the task ends failed, as the guide's clients expect (#11)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import websockets.asyncio.client

from progress_server.client import ProgressClient
from tests.apiclient import Api
from tests.conftest import MakeApi
from tests.enginekit import FAST_RETRIES
from tests.origins import Origin
from tests.serverproc import REPO_ROOT, free_port
from tests.wsclient import WS_PATH


def ws_url(api: Api) -> str:
    return str(api.client.make_url(WS_PATH)).replace("http://", "ws://", 1)


def assert_retrying(event: dict[str, Any], attempt: int) -> None:
    assert event["event"] == "download.retrying", event
    assert event["state"] == "downloading"
    assert set(event["error"]) >= {"type", "message"}
    assert event["error"]["type"] == "network_error"
    assert event["error"]["message"]
    assert event["attempt"] == attempt
    assert isinstance(event["retry_in_seconds"], int | float) and event["retry_in_seconds"] >= 0


# A file, and a manifest (auto: a media task, whose attempts are runs of the yt-dlp worker).
CLOSED = pytest.mark.parametrize("path", ["closed.bin", "closed.m3u8"], ids=["file", "media"])


@CLOSED
async def test_a_closed_port_gives_retrying_events_and_one_final_error(
    make_api: MakeApi, path: str
) -> None:
    api = await make_api(max_retries=3, **FAST_RETRIES)
    url = f"http://127.0.0.1:{free_port()}/{path}"
    # The guide's client: a plain WebSocket that takes download.error as the end.
    async with websockets.asyncio.client.connect(ws_url(api), additional_headers=api.auth()) as ws:
        await ws.send(json.dumps({"action": "subscribe", "task_id": "*"}))
        task = await api.submit(url)
        seen: list[dict[str, Any]] = []
        while True:
            frame = json.loads(await ws.recv())
            if frame.get("task_id") != task["task_id"]:
                continue
            seen.append(frame)
            if frame["event"] == "download.error":
                break
    assert (await api.task(task["task_id"])).get("source", "http") == (
        "media" if path.endswith(".m3u8") else "http"
    )
    final = seen[-1]
    assert final["state"] == "failed"
    assert final["error"]["type"] == "network_error"
    retrying = [e for e in seen if e["event"] == "download.retrying"]
    for attempt, event in enumerate(retrying, start=1):
        assert_retrying(event, attempt)
    assert len(retrying) == 3
    assert [e["event"] for e in seen].count("download.error") == 1

    # The history tells the same story.
    history = await api.events(task["task_id"])
    names = [e["event"] for e in history]
    assert names.count("download.retrying") == 3
    assert names.count("download.error") == 1
    assert names[-1] == "download.error" and history[-1]["state"] == "failed"
    assert [e for e in history if e["event"] == "download.retrying"] == retrying


async def test_the_python_client_waits_through_retries_to_the_final_error(
    make_api: MakeApi,
) -> None:
    api = await make_api(max_retries=2, **FAST_RETRIES)
    base = str(api.client.make_url("/")).rstrip("/")
    async with ProgressClient(base, api.key) as client:
        task = await client.create(f"http://127.0.0.1:{free_port()}/closed.bin")
        names = []
        async with client.subscribe([task["task_id"]], after_seq=0) as events:
            async for event in events:
                names.append(event["event"])
                if event["event"] == "download.error":
                    break
        assert event["state"] == "failed"
        assert names.count("download.retrying") == 2
        (record,) = await client.wait([task["task_id"]])
    assert record["state"] == "failed"


async def test_the_cli_says_it_retries_and_fails_once(make_api: MakeApi, tmp_path: Path) -> None:
    import asyncio
    import os

    api = await make_api(max_retries=2, retry_base_delay=0.3, retry_max_delay=0.3)
    base = str(api.client.make_url("/")).rstrip("/")
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "PROGRESS_SERVER_URL": base,
        "PROGRESS_SERVER_API_KEY": api.key,
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "progress_server",
        "add",
        "--wait",
        f"http://127.0.0.1:{free_port()}/closed.bin",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    text = err.decode()
    assert proc.returncode == 1, text
    lines = text.splitlines()
    retry_lines = [line for line in lines if "retrying" in line]
    assert len(retry_lines) == 2, text
    assert "attempt 1" in retry_lines[0] and "network_error" in retry_lines[0]
    failed_lines = [line for line in lines if " failed" in line and "network_error" in line]
    assert failed_lines, text


async def test_an_origin_that_recovers_never_sends_download_error(
    make_api: MakeApi, origin: Origin
) -> None:
    api = await make_api(max_retries=5, **FAST_RETRIES)
    task = await api.submit(origin.url(size=100_000, status=503, fail_times=2))
    await api.wait_for(task["task_id"], "completed")
    names = [e["event"] for e in await api.events(task["task_id"])]
    assert names.count("download.retrying") == 2
    assert "download.error" not in names
