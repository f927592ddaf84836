"""Stopping media work: cancel ends the worker's whole process group within 2 s, a server
killed with -9 takes its workers with it, and a killed worker's run is resumed, not redone.

Processes are found by walking /proc for descendants (tests/media_site.py).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from progress_server.media.errors import MediaError
from progress_server.media.job import MediaJob
from progress_server.media.results import MediaFile
from progress_server.media.transfer import MediaTransfer
from tests.media import duration
from tests.media_site import HLS_SECONDS, MediaSite, RecordingObserver, descendants
from tests.serverproc import REPO_ROOT

pytestmark = pytest.mark.timeout(180)

# ~0.9 MB of HLS at 100 kB/s: about nine seconds, long enough to catch it mid-way.
SLOW = 100_000


async def until(condition: Callable[[], bool], within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.05)


def alive(pid: int) -> bool:
    """True while `pid` runs (a zombie waiting to be reaped has stopped running)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


async def test_cancel_stops_the_worker_within_two_seconds(site: MediaSite, tmp_path: Path) -> None:
    observer = RecordingObserver()
    job = MediaJob(url=site.url("/media/hls/index.m3u8", rate=SLOW), output_dir=tmp_path)
    task = asyncio.create_task(MediaTransfer().download(job, observer))
    await asyncio.wait_for(observer.first_bytes.wait(), 60)
    workers = descendants()
    assert workers

    began = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert time.monotonic() - began < 2.0
    assert descendants() == []
    assert not any(alive(pid) for pid in workers)
    # The partial download stays for a later resume.
    assert any(p.name.endswith((".part", ".ytdl")) for p in tmp_path.iterdir())


async def test_stop_kills_what_ignores_sigterm(tmp_path: Path) -> None:
    """A worker (here a stand-in script) and a grandchild that both ignore SIGTERM, as a
    wedged ffmpeg might: SIGKILL to the group after the grace period ends them."""
    stubborn = tmp_path / "stubborn-python"
    stubborn.write_text("#!/bin/sh\ntrap '' TERM\n(trap '' TERM; sleep 120) &\nsleep 120\n")
    stubborn.chmod(0o755)
    transfer = MediaTransfer(python=str(stubborn), extract_timeout=1.0, max_retries=0)
    job = MediaJob(url="http://127.0.0.1:9/", output_dir=tmp_path / "out")

    began = time.monotonic()
    with pytest.raises(MediaError) as caught:
        await transfer.download(job, RecordingObserver())

    assert caught.value.error_type == "timeout"
    # 1 s to extract, 1 s of grace after SIGTERM, then SIGKILL.
    assert time.monotonic() - began < 3.5
    assert descendants() == []


_PARENT = """
import asyncio, sys
from pathlib import Path
from progress_server.media.job import MediaJob
from progress_server.media.transfer import MediaTransfer
from tests.media_site import RecordingObserver

job = MediaJob(url=sys.argv[1], output_dir=Path(sys.argv[2]))
asyncio.run(MediaTransfer().download(job, RecordingObserver()))
"""


async def test_a_server_killed_with_9_takes_its_worker_along(
    site: MediaSite, tmp_path: Path
) -> None:
    """The worker is in a session of its own, so nothing would kill it with the server. It
    is caught here while it waits on a stalled page and writes nothing (a worker that
    writes would die of the broken pipe anyway): only stdin's end can tell it."""
    parent = await asyncio.create_subprocess_exec(
        *(sys.executable, "-c", _PARENT, site.url("/stall/page.html"), str(tmp_path)),
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    try:
        await until(lambda: any(hit.path == "/stall/page.html" for hit in site.hits))
        workers = descendants(parent.pid)
        assert workers
        parent.send_signal(signal.SIGKILL)
        await parent.wait()

        await until(lambda: not any(alive(pid) for pid in workers), within=3.0)
    finally:
        if parent.returncode is None:
            parent.kill()
            await parent.wait()


async def test_a_killed_worker_is_resumed_from_its_fragments(
    site: MediaSite, tmp_path: Path
) -> None:
    observer = RecordingObserver()
    job = MediaJob(url=site.url("/media/hls/index.m3u8", rate=150_000), output_dir=tmp_path)
    transfer = MediaTransfer(max_retries=2, retry_base_delay=0.05)
    task = asyncio.create_task(transfer.download(job, observer))
    await until(lambda: observer.received_bytes > 300_000)
    for pid in descendants():
        os.killpg(pid, signal.SIGKILL)
        break

    result = await asyncio.wait_for(task, 120)

    assert [(e.error_type, attempt) for e, attempt in observer.failures] == [("internal_error", 1)]
    # The second run started from the fragments on disk, not from zero...
    assert len(observer.offsets) == 2 and observer.offsets[1] > 300_000
    # ...so only the fragment that was cut off was fetched twice.
    assert site.fragment_hits() <= 15 + 2
    assert isinstance(result, MediaFile), result
    assert duration(result.path) == pytest.approx(HLS_SECONDS, abs=0.5)
    shown = observer.percentages
    assert all(b >= a for a, b in itertools.pairwise(shown))


async def test_extraction_that_hangs_times_out_and_leaves_nothing(
    site: MediaSite, tmp_path: Path
) -> None:
    transfer = MediaTransfer(extract_timeout=3.0, max_retries=0)
    job = MediaJob(url=site.url("/stall/page.html"), output_dir=tmp_path)

    began = time.monotonic()
    with pytest.raises(MediaError) as caught:
        await transfer.download(job, RecordingObserver())

    assert caught.value.error_type == "timeout"
    assert "extraction took longer than 3 s" in caught.value.message
    assert time.monotonic() - began < 3.0 + 2.0
    assert descendants() == []
