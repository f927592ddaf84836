"""PartFile, BlockWriter, PrefixHasher and the segment journal, on real files."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from progress_server.downloads_dir import journal_path, part_path
from progress_server.engine import Downloader
from progress_server.engine.journal import JournalUnreadable, SavedSegments, SidecarJournal
from progress_server.engine.partfile import BlockWriter, PartFile, PrefixHasher
from progress_server.models import Task, TaskState
from progress_server.settings import Settings

MiB = 1024 * 1024


def data_of(size: int) -> bytes:
    return hashlib.shake_256(b"part").digest(size)


async def write_all(writer: BlockWriter, data: bytes, piece: int) -> None:
    for i in range(0, len(data), piece):
        await writer.add(data[i : i + piece])
    await writer.close()


async def test_segments_written_out_of_order_hash_like_the_whole_file(tmp_path: Path) -> None:
    data = data_of(24 * MiB + 123)
    part = PartFile(tmp_path / "f.part")
    await part.open(keep=0)
    await part.preallocate(len(data))
    hasher = PrefixHasher(part)
    cuts = [0, 8 * MiB, 16 * MiB, len(data)]
    written = [0, 0, 0]

    def counter(i: int) -> Callable[[int], None]:
        def landed(n: int) -> None:
            written[i] += n
            frontier = 0
            for k in range(3):
                frontier = cuts[k] + written[k]
                if frontier < cuts[k + 1]:
                    break
            hasher.catch_up(frontier)

        return landed

    writers = []
    # The last segment first and the first last: most of the file is read back.
    for i in (2, 1, 0):
        writer = BlockWriter(part, hasher)
        writer.bind(cuts[i], counter(i))
        writers.append(write_all(writer, data[cuts[i] : cuts[i + 1]], 100_000))
    await asyncio.gather(*writers)

    assert written == [cuts[1], cuts[2] - cuts[1], cuts[3] - cuts[2]]
    digest = await hasher.digest(len(data), lambda: len(data))
    assert digest == hashlib.sha256(data).hexdigest()
    part.close()
    assert (tmp_path / "f.part").read_bytes() == data


async def test_one_writer_in_order_is_hashed_from_memory(tmp_path: Path) -> None:
    data = data_of(5 * MiB)
    part = PartFile(tmp_path / "g.part")
    await part.open(keep=0)
    hasher = PrefixHasher(part)
    writer = BlockWriter(part, hasher)
    writer.bind(0, lambda n: None)
    await write_all(writer, data, 64 * 1024)
    assert await hasher.digest(len(data), lambda: len(data)) == hashlib.sha256(data).hexdigest()
    assert hasher.read_back == 0
    part.close()


async def test_a_cancelled_writer_still_writes_what_it_was_given(tmp_path: Path) -> None:
    part = PartFile(tmp_path / "c.part")
    await part.open(keep=0)
    hasher = PrefixHasher(part)
    landed: list[int] = []
    given = data_of(300_000)

    async def feed() -> None:
        writer = BlockWriter(part, hasher)
        writer.bind(0, landed.append)
        try:
            await writer.add(given)
            await asyncio.sleep(60)  # cancelled here, with the bytes still buffered
        finally:
            await writer.close()

    job = asyncio.create_task(feed())
    await asyncio.sleep(0.05)
    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job
    assert sum(landed) == len(given)
    part.close()
    assert (tmp_path / "c.part").read_bytes() == given


async def test_open_keeps_cuts_or_empties(tmp_path: Path) -> None:
    path = tmp_path / "k.part"
    path.write_bytes(b"x" * 1000)
    part = PartFile(path)
    assert await part.open(keep=None) == 1000
    part.close()
    assert await part.open(keep=600) == 600
    part.close()
    assert path.stat().st_size == 600
    assert await part.open(keep=0) == 0
    part.close()


async def test_journal_round_trip_and_what_a_resume_keeps(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    root = settings.downloads_dir
    root.mkdir()
    part = part_path(root, "j.bin")
    journal = SidecarJournal(journal_path(root, "j.bin"))
    assert await journal.load() is None
    saved = SavedSegments(1000, '"v1"', ((0, 500, 200), (500, 1000, 900)))
    await journal.save(saved)
    assert journal.path == root / "j.bin.part.segments"
    assert await journal.load() == saved
    assert not list(root.glob("*.tmp"))

    task = Task("t", 1, "http://example.test/j.bin", "j.bin", TaskState.PAUSED, 0, 0)
    task.etag = '"v1"'
    async with aiohttp.ClientSession() as session:
        kept = Downloader(settings, session).kept_bytes
        part.write_bytes(b"\0" * 1000)  # preallocated: the size is the total
        assert await kept(task) == 200 + 400
        task.etag = '"v2"'  # the journal is of another version: nothing is kept
        assert await kept(task) == 0
        task.etag = '"v1"'
        with part.open("r+b") as f:
            f.truncate(300)  # a crash before the preallocation: a plain prefix
        assert await kept(task) == 300
        await journal.remove()
        assert await journal.load() is None
        assert await kept(task) == 300
        journal.path.write_text("not json")  # an unreadable journal: start over
        assert await kept(task) == 0


async def test_an_unreadable_journal_is_said_so(tmp_path: Path) -> None:
    journal = SidecarJournal(tmp_path / "u.part.segments")
    journal.path.write_text('{"format": 1, "total": "many"}')
    with pytest.raises(JournalUnreadable):
        await journal.load()
    journal.path.write_text("not json")
    with pytest.raises(JournalUnreadable):
        await journal.load()


def _descriptors_of(path: Path) -> list[str]:
    """This process's open file descriptors that point at `path`."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/self/fd/{fd}") == str(path):
                found.append(fd)
    return found


async def test_a_cancelled_open_leaves_no_descriptor_behind(tmp_path: Path) -> None:
    part = PartFile(tmp_path / "slow.part", lambda: time.sleep(0.3))  # a slow disk
    opening = asyncio.ensure_future(part.open(keep=0))
    await asyncio.sleep(0.05)
    opening.cancel()  # a pause while the thread is still opening the file
    with pytest.raises(asyncio.CancelledError):
        await opening
    part.close()
    await asyncio.sleep(0.5)  # a thread left running would have opened it by now
    assert _descriptors_of(part.path) == []
