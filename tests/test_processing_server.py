"""Post-processing in the real server process: a crash mid-transcode, ffmpeg missing from
PATH, and the hook options as given on the command line and in the environment."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.apiclient import eventually
from tests.media import HAVE_FFMPEG, codecs, processes_mentioning
from tests.origins import Origin
from tests.serverproc import ServerProcess, create_key
from tests.test_hooks import HOOK_SCRIPT, SECRET, Receiver

pytestmark = pytest.mark.skipif(not HAVE_FFMPEG, reason="needs ffmpeg and ffprobe on PATH")


class Client:
    """Just enough of a REST client for one server process."""

    def __init__(self, server: ServerProcess, key: str, session: aiohttp.ClientSession) -> None:
        self.server = server
        self.session = session
        self.headers = {"Authorization": f"Bearer {key}"}

    async def call(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        url = self.server.base_url + path
        async with self.session.request(method, url, headers=self.headers, **kwargs) as resp:
            return resp.status, await resp.json()

    async def task(self, task_id: str) -> dict[str, Any]:
        status, body = await self.call("GET", f"/api/downloads/{task_id}")
        assert status == 200, body
        return dict(body)

    async def wait_for(self, task_id: str, state: str, within: float = 120) -> dict[str, Any]:
        record: dict[str, Any] = {}

        async def reached() -> bool:
            nonlocal record
            record = await self.task(task_id)
            current: str = record["state"]
            assert current not in {"failed", "cancelled"} - {state}, record
            return current == state

        await eventually(reached, within, lambda: f"never {state}: {record}")
        return record


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as started:
        yield started


async def test_stop_or_crash_mid_transcode_runs_it_again_on_the_next_start(
    tmp_path: Path, media_origin: Origin, session: aiohttp.ClientSession
) -> None:
    data = tmp_path / "data"
    key = create_key(data, "user")
    downloads = data / "downloads"
    server = ServerProcess(data)
    server.start()

    async def transcoding() -> bool:
        scratch = [p for p in downloads.glob(".*.transcode.*") if p.stat().st_size > 0]
        return bool(scratch) and bool(processes_mentioning(str(downloads)))

    try:
        client = Client(server, key, session)
        url = media_origin.url("/media/long.mkv")
        status, task = await client.call(
            "POST", "/api/downloads", json={"url": url, "post_process": {"transcode": "mp4"}}
        )
        assert status == 201, task
        await eventually(transcoding, 60, lambda: server.log_tail())

        # SIGTERM: ffmpeg is stopped with the server, which exits cleanly.
        assert server.stop() == 0
        assert processes_mentioning(str(downloads)) == []
        server.start()
        assert (await client.task(task["task_id"]))["state"] == "processing"
        await eventually(transcoding, 60, lambda: server.log_tail())

        # SIGKILL: the kernel takes ffmpeg down with the server (no orphan writing on).
        server.kill()

        async def ffmpeg_gone() -> bool:
            return not processes_mentioning(str(downloads))

        await eventually(ffmpeg_gone, 10, lambda: "ffmpeg outlived the server")

        server.start()
        done = await client.wait_for(task["task_id"], "completed")
    finally:
        server.stop()
    assert done["filename"] == "long.mp4"
    assert done["result"]["duration_seconds"] == 60
    assert codecs(downloads / "long.mp4") == {"video": "h264", "audio": "aac"}
    # The download was kept and not fetched again; no scratch file is left.
    assert media_origin.count("/media/long.mkv", "GET") == 1
    assert sorted(p.name for p in downloads.iterdir()) == ["long.mkv", "long.mp4"]


async def test_without_ffmpeg_media_is_not_probed_and_transcodes_are_refused(
    tmp_path: Path, media_origin: Origin, session: aiohttp.ClientSession
) -> None:
    data = tmp_path / "data"
    key = create_key(data, "user")
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    with ServerProcess(data, env={"PATH": str(empty_bin)}) as server:
        client = Client(server, key, session)
        url = media_origin.url("/media/clip.mkv")
        status, refused = await client.call(
            "POST", "/api/downloads", json={"url": url, "post_process": {"transcode": "mp3"}}
        )
        assert status == 422
        assert refused["error"]["type"] == "validation_error"
        assert "ffmpeg" in refused["error"]["message"]
        status, listing = await client.call("GET", "/api/downloads")
        assert listing["tasks"] == []

        status, task = await client.call("POST", "/api/downloads", json={"url": url})
        assert status == 201
        done = await client.wait_for(task["task_id"], "completed")
        log = server.log_text()
    # Not probed, so nothing is claimed: no duration, no media details.
    assert set(done["result"]) == {"filename", "size_mb", "duration_seconds"}
    assert done["result"]["duration_seconds"] is None
    warnings = [line for line in log.splitlines() if "WARNING" in line and "ffmpeg" in line]
    assert len(warnings) == 1, log


async def test_hook_options_from_the_command_line_and_environment(
    tmp_path: Path, origin: Origin, session: aiohttp.ClientSession
) -> None:
    data = tmp_path / "data"
    key = create_key(data, "user")
    script = tmp_path / "hook.py"
    script.write_text(f"#!{sys.executable}\n{HOOK_SCRIPT}")
    script.chmod(0o755)
    out = tmp_path / "with space" / "env.json"
    out.parent.mkdir()
    async with Receiver() as receiver:
        # Quoted like a shell would be, but run without one; the program's path is relative
        # to the server's working directory (the data folder, for ServerProcess).
        command = f"../hook.py '{out}'"
        env = {"PROGRESS_SERVER_WEBHOOK": receiver.url, "PROGRESS_SERVER_WEBHOOK_SECRET": SECRET}
        with ServerProcess(data, "--on-complete", command, env=env) as server:
            client = Client(server, key, session)
            status, task = await client.call(
                "POST", "/api/downloads", json={"url": origin.url("/file/f.bin", size=1000)}
            )
            assert status == 201

            async def both_hooks_recorded() -> bool:
                _, page = await client.call("GET", f"/api/downloads/{task['task_id']}/events")
                kinds = {e["hook"]["kind"] for e in page["events"] if e["event"] == "download.hook"}
                return kinds == {"command", "webhook"}

            await eventually(both_hooks_recorded, 60, lambda: server.log_tail())
            log = server.log_text()
        assert len(receiver.received) == 1
        headers, _ = receiver.received[0]
        assert headers["X-Progress-Signature"].startswith("sha256=")
    assert out.is_file()
    # Neither the secret nor the webhook URL's query string reaches the log.
    assert SECRET not in log and "token=abc" not in log
