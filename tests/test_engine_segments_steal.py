"""Work stealing while answers are still on their way: a steal never turns a correct
answer into a refused one, and no byte is fetched twice."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from progress_server.engine.connection import Connection
from progress_server.engine.downloader import Downloader
from progress_server.engine.errors import DownloadError
from progress_server.engine.partfile import PartFile, PrefixHasher
from progress_server.engine.segments import SegmentPlan
from progress_server.engine.throttle import Throttle
from progress_server.models import Task, TaskState
from progress_server.settings import Settings
from tests.conftest import MakeApi
from tests.enginekit import FAST_RETRIES, TinyOrigin, downloaded, restarts, sha256_file
from tests.origins import payload, payload_sha256

SIZE = 2_000_000
SEED = 7
ETAG = '"steal-v1"'
SPLIT: dict[str, Any] = {"segments": 2, "min_segment_size": 200_000, **FAST_RETRIES}


class LateSecondAnswer:
    """The whole file trickles for a moment (so the download is split), then comes at
    once; the first ranged request (the second connection's) is answered, correctly,
    only a second later: long enough for the first connection to finish its part and
    steal from the second's."""

    def __init__(self) -> None:
        self.data = payload(SIZE, SEED)
        self.starts: list[int] = []
        self._delayed = False

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        asked = request.headers.get("Range")
        if asked is None:
            self.starts.append(0)
            whole = web.StreamResponse(
                headers={"Content-Length": str(SIZE), "ETag": ETAG, "Accept-Ranges": "bytes"}
            )
            await whole.prepare(request)
            try:
                for at in range(0, 64 * 1024, 8192):
                    await whole.write(self.data[at : at + 8192])
                    await asyncio.sleep(0.03)
                await whole.write(self.data[64 * 1024 :])
            except ConnectionResetError:
                pass  # the client took what it needed and closed the connection
            return whole
        found = re.fullmatch(r"bytes=(\d+)-(\d*)", asked)
        assert found, asked
        first = int(found[1])
        last = int(found[2]) if found[2] else SIZE - 1
        self.starts.append(first)
        if not self._delayed:
            self._delayed = True
            await asyncio.sleep(1.0)
        return web.Response(
            status=206,
            body=self.data[first : last + 1],
            headers={"Content-Range": f"bytes {first}-{last}/{SIZE}", "ETag": ETAG},
        )


async def test_a_steal_while_a_request_is_pending_keeps_its_answer(make_api: MakeApi) -> None:
    api = await make_api(**SPLIT)
    origin = LateSecondAnswer()
    async with TinyOrigin(origin) as server:
        task = await api.submit(server.url("/late.bin"))
        done = await api.wait_for(task["task_id"], "completed", within=30)
    assert sha256_file(downloaded(api, done)) == payload_sha256(SIZE, SEED)
    events = await api.events(task["task_id"])
    assert restarts(events) == []
    # The late answer was the range asked for: it is kept, so no offset is asked twice
    # (refused, its bytes would be fetched again, or the file from zero).
    assert len(origin.starts) > 2, origin.starts
    assert len(set(origin.starts)) == len(origin.starts), origin.starts


class CancelOnSecondConnection:
    """A transfer's observer that, when a second connection opens, cancels the download
    and takes a moment to record the change (an observer may await, e.g. a database)."""

    def __init__(self) -> None:
        self.download: asyncio.Task[Any] | None = None

    async def choose_filename(self, content_disposition: str | None) -> str:
        return "leak.bin"

    async def response_started(
        self, offset: int, total: int | None, etag: str | None, last_modified: str | None
    ) -> None:
        pass

    async def restarted_from_zero(self, reason: str) -> None:
        pass

    def check_may_write(self) -> None:
        pass

    async def received(self, nbytes: int) -> None:
        pass

    async def attempt_failed(self, error: DownloadError, attempt: int, delay: float) -> None:
        pass

    async def connections_changed(self, open_now: int) -> None:
        if open_now >= 2 and self.download is not None:
            self.download.cancel()
            await asyncio.sleep(0.05)


async def test_a_cancel_as_a_connection_opens_gives_its_host_slot_back(tmp_path: Path) -> None:
    limit = 2
    settings = Settings(data_dir=tmp_path / "data", max_connections_per_host=limit, **SPLIT)
    async with TinyOrigin(LateSecondAnswer()) as server, aiohttp.ClientSession() as session:
        downloader = Downloader(settings, session)
        now = time.time()
        task = Task("t-leak", 1, server.url("/leak.bin"), None, TaskState.DOWNLOADING, now, now)
        observer = CancelOnSecondConnection()
        observer.download = asyncio.ensure_future(downloader.download(task, observer))
        with pytest.raises(asyncio.CancelledError):
            await observer.download
    # Every connection of the cancelled download counts no more: the host has all of its
    # --max-connections-per-host free for the next downloads.
    assert all(downloader.hosts.take("127.0.0.1", first=False) for _ in range(limit))


class Paced:
    """A 200 kB file sent in four pieces 0.3 s apart; the last one is 40 kB."""

    SIZES = (60_000, 60_000, 40_000, 40_000)

    def __init__(self) -> None:
        self.data = payload(sum(self.SIZES), SEED)

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": str(len(self.data))})
        await response.prepare(request)
        at = 0
        for size in self.SIZES:
            await response.write(self.data[at : at + size])
            at += size
            await asyncio.sleep(0.3)
        return response


async def test_a_steal_during_a_slow_write_never_writes_bytes_twice(tmp_path: Path) -> None:
    origin = Paced()
    total = len(origin.data)
    writes = 0

    def slow_first_write() -> None:
        # The first block's write (on its thread) takes 1.2 s: the fourth piece, 0.9 s in,
        # waits for it, and a steal lands while it waits.
        nonlocal writes
        writes += 1
        if writes == 2:  # the first call is the open
            time.sleep(1.2)

    part = PartFile(tmp_path / "paced.bin.part", slow_first_write)
    await part.open(keep=0)
    plan = SegmentPlan.single(total, min_size=1)
    segment = plan.claim(0)
    assert segment is not None

    def landed(nbytes: int) -> None:
        segment.written += nbytes

    async def no_progress(nbytes: int) -> None:
        pass

    conn = Connection(0, part, PrefixHasher(part, enabled=False), Throttle([]), no_progress)
    async with TinyOrigin(origin) as server, aiohttp.ClientSession() as session:
        async with session.get(server.url("/paced.bin")) as response:
            streaming = asyncio.ensure_future(conn.stream(response, segment, plan, total, landed))
            await asyncio.sleep(1.2)
            stolen = plan.steal(1)
            await streaming
    part.close()
    # Whatever was stolen, no byte is claimed twice: the segments still tile the file
    # (a journal of them restores) and hold no more than the file.
    assert SegmentPlan.restore(total, plan.spans(), 1) is not None, (plan.spans(), stolen)
    assert sum(written - start for start, _, written in plan.spans()) <= total
    assert conn.received <= total
