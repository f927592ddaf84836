"""Media sources through the real server process: a video page, a bare manifest and a
two-video playlist from the local video site (tests/media_site.py), live progress over the
WebSocket, cancel, kill -9 and restart, and a page without media.

Files are checked with ffprobe; processes by walking /proc below the server's pid. The site
runs in this test's event loop, so every blocking ServerProcess call goes through a thread.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.apiclient import eventually, read_only_db
from tests.media import codecs, duration
from tests.media_site import HLS_SECONDS, MP4_SECONDS, MediaSite, descendants
from tests.processapi import ProcessApi
from tests.serverproc import ServerProcess, create_key
from tests.wsclient import WS_PATH, recv, recv_until

pytestmark = pytest.mark.timeout(300)

JSON = dict[str, Any]
HLS_FRAGMENTS = HLS_SECONDS // 2


class Served(ProcessApi):
    """The server process, one key, and the calls the tests make."""

    def __init__(self, server: ServerProcess, key: str, session: aiohttp.ClientSession) -> None:
        self.server = server
        self.key = key
        self.session = session

    @property
    def http(self) -> aiohttp.ClientSession:
        return self.session

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def where(self) -> str:
        return f"\n{self.log()}"

    async def events(self, task_id: str) -> list[JSON]:
        page = await self.call("GET", f"/api/downloads/{task_id}/events")
        events: list[JSON] = page["events"]
        return events

    async def wait(self, task_id: str, state: str, within: float = 180) -> JSON:
        task: JSON = {}

        async def reached() -> bool:
            nonlocal task
            task = await self.task(task_id)
            assert task["state"] not in {"failed", "cancelled", "completed"} - {state}, task
            return bool(task["state"] == state)

        await eventually(reached, within, lambda: f"{state} not reached: {task}\n{self.log()}")
        return task

    async def wait_bytes(self, task_id: str, at_least: int) -> JSON:
        task: JSON = {}

        async def enough() -> bool:
            nonlocal task
            task = await self.task(task_id)
            return int(task["progress"]["downloaded_bytes"]) >= at_least

        await eventually(enough, 120, lambda: f"stuck at {task}\n{self.log()}")
        return task

    def file(self, task: JSON) -> Path:
        return self.server.data_dir / "downloads" / str(task["filename"])

    def log(self) -> str:
        return self.server.log_tail()


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    data = tmp_path / "data"
    key = await asyncio.to_thread(create_key, data, "media")
    server = ServerProcess(data)
    await asyncio.to_thread(server.start)
    try:
        async with aiohttp.ClientSession() as session:
            yield Served(server, key, session)
    finally:
        if server.running:
            await asyncio.to_thread(server.stop)


def alive(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def never_decreasing(values: list[float]) -> bool:
    return all(later >= earlier for earlier, later in itertools.pairwise(values))


async def test_a_page_a_manifest_and_a_playlist_complete_with_their_durations(
    served: Served, site: MediaSite
) -> None:
    page = await served.submit(site.url("/page/one.html"), source="media")
    manifest = await served.submit(site.url("/media/hls/index.m3u8"))
    playlist = await served.submit(site.url("/page/two.html"), source="media")
    # "auto" took the bare manifest as media: nobody wants its text as a file.
    assert manifest["source"] == "media"

    page = await served.wait(page["task_id"], "completed")
    manifest = await served.wait(manifest["task_id"], "completed")
    playlist = await served.wait(playlist["task_id"], "completed")

    assert page["filename"].startswith("One Clip") and page["filename"].endswith(".mp4")
    assert manifest["filename"] == "index.mp4"
    for task in (page, manifest):
        assert task["result"]["duration_seconds"] == HLS_SECONDS
        assert duration(served.file(task)) == pytest.approx(HLS_SECONDS, abs=0.5)
        assert codecs(served.file(task)) == {"video": "h264", "audio": "aac"}
        assert task["progress"]["percentage"] == 100.0

    entries = [await served.task(entry_id) for entry_id in playlist["entries"]]
    assert [e["playlist_index"] for e in entries] == [1, 2]
    assert {e["parent_id"] for e in entries} == {playlist["task_id"]}
    assert [e["state"] for e in entries] == ["completed", "completed"]
    assert [e["filename"] for e in entries] == ["Two Clips (1).mp4", "Two Clips (2).mp4"]
    assert duration(served.file(entries[0])) == pytest.approx(MP4_SECONDS, abs=0.5)
    assert duration(served.file(entries[1])) == pytest.approx(HLS_SECONDS, abs=0.5)
    assert playlist["filename"] == "Two Clips"
    assert playlist["result"]["duration_seconds"] == MP4_SECONDS + HLS_SECONDS
    assert playlist["progress"]["percentage"] == 100.0
    # The parent has no file; each entry has its own, served like any task's.
    await served.call("GET", f"/api/downloads/{playlist['task_id']}/file", 409)
    async with served.session.get(
        f"{served.server.base_url}/api/downloads/{entries[1]['task_id']}/file",
        headers=served.headers,
    ) as resp:
        assert resp.status == 200
        assert len(await resp.read()) == served.file(entries[1]).stat().st_size


async def test_live_progress_never_goes_back_and_tells_fragments_and_the_merge(
    served: Served, site: MediaSite
) -> None:
    # Separate video and audio streams, merged by ffmpeg: each part's own bar would restart
    # from zero; the task's must not.
    task = await served.submit(site.url("/media/split/master.m3u8", rate=250_000))
    task_id = task["task_id"]
    async with served.session.ws_connect(
        served.server.base_url + WS_PATH, headers=served.headers
    ) as ws:
        await ws.send_json({"action": "subscribe", "task_id": task_id, "after_seq": 0})
        frames = await recv_until(ws, lambda f: f.get("event") == "download.completed", within=240)

    progress = [f for f in frames if f.get("event") == "download.progress"]
    shown = [f["progress"]["percentage"] for f in progress if f["progress"]["percentage"]]
    assert len(shown) > 10, progress
    assert never_decreasing(shown), shown
    assert shown[-1] == 100.0
    fragments = [f["fragments"] for f in progress if "fragments" in f]
    assert fragments and all(set(f) == {"index", "count"} for f in fragments)
    # The second stream's fragments count from 1 again: the percentage above did not.
    assert any(b["index"] < a["index"] for a, b in itertools.pairwise(fragments)), fragments
    names = [f["event"] for f in frames if f.get("task_id") == task_id]
    assert names.index("download.processing") > max(
        i for i, name in enumerate(names) if name == "download.progress"
    )
    steps = [f["processing"]["step"] for f in frames if "processing" in f]
    assert "merge" in steps
    done = frames[-1]
    assert done["result"]["duration_seconds"] == HLS_SECONDS
    assert codecs(served.file(await served.task(task_id))) == {"video": "h264", "audio": "aac"}


async def test_cancel_stops_yt_dlp_and_ffmpeg_leaving_no_process(
    served: Served, site: MediaSite
) -> None:
    task = await served.submit(site.url("/media/hls/index.m3u8", rate=40_000))
    await served.wait_bytes(task["task_id"], 60_000)
    assert served.server.pid is not None
    workers = descendants(served.server.pid)
    assert workers, "the media worker should be running below the server"

    began = time.monotonic()
    cancelled = await served.call("POST", f"/api/downloads/{task['task_id']}/cancel")
    took = time.monotonic() - began

    assert cancelled["state"] == "cancelled"
    assert took < 2.0
    assert descendants(served.server.pid) == []
    assert not any(alive(pid) for pid in workers)


async def test_kill_9_mid_media_then_restart_completes_from_the_fragments(
    served: Served, site: MediaSite
) -> None:
    task = await served.submit(site.url("/media/hls/index.m3u8", rate=60_000))
    task_id = task["task_id"]
    await served.wait_bytes(task_id, 300_000)
    assert served.server.pid is not None
    workers = descendants(served.server.pid)

    await asyncio.to_thread(served.server.kill)
    # The worker sees its stdin end and takes its process group down with it.
    await eventually(lambda: _none_alive(workers), 5, lambda: f"still running: {workers}")
    before = site.fragment_hits()
    assert before < HLS_FRAGMENTS

    await asyncio.to_thread(served.server.start)
    done = await served.wait(task_id, "completed")

    # Resumed from yt-dlp's fragments on disk: only the one cut off is fetched twice.
    assert site.fragment_hits() <= HLS_FRAGMENTS + 2
    assert duration(served.file(done)) == pytest.approx(HLS_SECONDS, abs=0.5)
    assert done["result"]["duration_seconds"] == HLS_SECONDS
    events = await served.events(task_id)
    assert any(e.get("recovered") for e in events if e["event"] == "download.queued")


async def _none_alive(pids: list[int]) -> bool:
    return not any(alive(pid) for pid in pids)


async def test_playlist_parent_and_entries_survive_kill_9(served: Served, site: MediaSite) -> None:
    parent = await served.submit(site.url("/page/two.html", rate=60_000), source="media")
    parent_id = parent["task_id"]

    async def expanded() -> bool:
        return "entries" in await served.task(parent_id)

    await eventually(expanded, 120, served.log)
    entries = (await served.task(parent_id))["entries"]
    await served.wait_bytes(entries[1], 200_000)
    await asyncio.to_thread(served.server.kill)

    with read_only_db(served.server.data_dir / "progress.db") as db:
        stored = db.execute("SELECT entries FROM tasks WHERE task_id = ?", (parent_id,)).fetchone()
        children = db.execute(
            "SELECT task_id, playlist_index FROM tasks WHERE parent_id = ? ORDER BY 2",
            (parent_id,),
        ).fetchall()
    assert json.loads(stored[0]) == entries
    assert [task_id for task_id, _ in children] == entries

    await asyncio.to_thread(served.server.start)
    after = await served.task(parent_id)
    assert after["entries"] == entries and after["source"] == "media"
    done = await served.wait(parent_id, "completed")

    assert done["entries"] == entries
    records = [await served.task(entry_id) for entry_id in entries]
    assert [r["parent_id"] for r in records] == [parent_id, parent_id]
    assert [r["state"] for r in records] == ["completed", "completed"]
    assert duration(served.file(records[1])) == pytest.approx(HLS_SECONDS, abs=0.5)
    assert done["result"]["duration_seconds"] == MP4_SECONDS + HLS_SECONDS
    # Only entry 2 was interrupted; it went on from its fragments.
    assert site.fragment_hits() <= HLS_FRAGMENTS + 2


async def test_a_page_without_media_fails_with_extract_error(
    served: Served, site: MediaSite
) -> None:
    url = site.url("/page/none.html")
    task = await served.submit(url, source="media")

    failed = await served.wait(task["task_id"], "failed")

    assert failed["error"]["type"] == "extract_error"
    assert failed["error"]["message"] == f"Unsupported URL: {url}"
    errors = [e for e in await served.events(task["task_id"]) if e["event"] == "download.error"]
    assert len(errors) == 1 and errors[0]["state"] == "failed"
    async with served.session.ws_connect(
        served.server.base_url + WS_PATH, headers=served.headers
    ) as ws:
        await ws.send_json({"action": "subscribe", "task_id": task["task_id"]})
        subscribed = await recv(ws)
    assert subscribed["state"] == "failed"
