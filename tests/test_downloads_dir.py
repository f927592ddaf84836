"""DownloadsDir: names claimed once however they collide, `.part` paths that fit, files
placed durably, and deletion that removes a task's files (transcode outputs included) and
nothing outside the folder. Real SQLite store, real files."""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from progress_server import filenames
from progress_server.downloads_dir import DownloadsDir, scratch_path
from progress_server.models import Event, EventName, Task, TaskState
from progress_server.store.sqlite import SqliteStore


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    opened = SqliteStore(tmp_path / "progress.db")
    await opened.open()
    await opened.create_key("k", "hash", False)
    yield opened
    await opened.close()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    folder = tmp_path / "downloads"
    folder.mkdir()
    return folder


_SEQ = itertools.count(1)


async def _task(store: SqliteStore, filename: str | None = None) -> Task:
    now = time.time()
    task = Task(
        str(uuid.uuid4()), 1, "http://example.test/f", filename, TaskState.PENDING, now, now
    )
    event = Event(next(_SEQ), EventName.QUEUED, task.task_id, 1, TaskState.PENDING, now)
    await store.insert_task(task, None, event)
    return task


async def test_colliding_claims_get_numbered_names(store: SqliteStore, root: Path) -> None:
    downloads = DownloadsDir(root, store)
    tasks = [await _task(store) for _ in range(5)]
    names = await asyncio.gather(*(downloads.claim(t.task_id, "report.pdf") for t in tasks))
    assert sorted(names) == sorted(
        ["report.pdf", "report (1).pdf", "report (2).pdf", "report (3).pdf", "report (4).pdf"]
    )
    stored = [await store.get_task(t.task_id) for t in tasks]
    assert [s.filename for s in stored if s] == names


async def test_names_on_disk_and_part_files_count_as_taken(store: SqliteStore, root: Path) -> None:
    (root / "notes.txt").write_text("someone else's")
    (root / filenames.part_name("data.bin")).write_bytes(b"half")
    downloads = DownloadsDir(root, store)
    first, second = await _task(store), await _task(store)
    assert await downloads.claim(first.task_id, "notes.txt") == "notes (1).txt"
    assert await downloads.claim(second.task_id, "data.bin") == "data (1).bin"


async def test_two_folders_on_one_store_never_share_a_name(store: SqliteStore, root: Path) -> None:
    # Two nodes of a cluster: separate locks, one database. The store's conditional claim
    # is what keeps them apart.
    one, two = DownloadsDir(root, store), DownloadsDir(root, store)
    tasks = [await _task(store) for _ in range(6)]
    names = await asyncio.gather(
        *((one if i % 2 else two).claim(task.task_id, "clip.mp4") for i, task in enumerate(tasks))
    )
    assert len(set(names)) == 6


async def test_a_new_tasks_name_is_recorded_under_the_claim(store: SqliteStore, root: Path) -> None:
    downloads = DownloadsDir(root, store)
    await _task(store, "a.bin")
    recorded: list[str] = []

    async def record(name: str) -> None:
        recorded.append(name)
        await _task(store, name)

    name = await downloads.claim_for_new("a.bin", record)
    assert name == "a (1).bin" and recorded == [name]
    assert await store.filenames_in_use() == {"a.bin", "a (1).bin"}


async def test_hostile_origin_names_stay_inside_the_folder(store: SqliteStore, root: Path) -> None:
    downloads = DownloadsDir(root, store)
    for hostile in ("../../etc/passwd", "..\\..\\boot.ini", "/abs/path.bin", "a/../../b"):
        task = await _task(store)
        wanted = filenames.choose(None, f'attachment; filename="{hostile}"', task.url, task.task_id)
        name = await downloads.claim(task.task_id, wanted)
        for path in (downloads.file_path(name), downloads.part_path(name)):
            assert path.resolve().parent == root.resolve(), (hostile, path)


async def test_longest_names_have_part_paths_that_fit(store: SqliteStore, root: Path) -> None:
    downloads = DownloadsDir(root, store)
    task = await _task(store)
    # 255 bytes, the most a plain name may have: ".part" cannot simply be appended.
    name = await downloads.claim(task.task_id, "é" * 125 + "x.bin")
    part = downloads.part_path(name)
    assert len(part.name.encode()) <= filenames.MAX_NAME_BYTES
    part.write_bytes(b"x" * 1234)  # the file system takes it
    # So does the journal a split download keeps beside it, under a name of its own.
    journal = downloads.journal_path(name)
    assert len(journal.name.encode()) <= filenames.MAX_NAME_BYTES and journal != part
    journal.write_text("{}")
    assert journal != downloads.journal_path("é" * 124 + "a.bin")
    task.filename = name
    assert downloads.has_part(task)


async def test_downloads_finishing_together_are_all_placed(store: SqliteStore, root: Path) -> None:
    downloads = DownloadsDir(root, store)
    names = [f"f{i}.bin" for i in range(20)]
    for name in names:
        downloads.part_path(name).write_bytes(name.encode())
    # One batch is renamed while the others queue up; every caller hears of its own file.
    placed = await asyncio.gather(
        *(downloads.place_download(downloads.part_path(n), n) for n in names)
    )
    assert placed == [root / n for n in names]
    assert all((root / n).read_bytes() == n.encode() for n in names)
    assert not list(root.glob("*.part"))
    # A part that is not there fails its own placing only, not the batch it is in.
    downloads.part_path("ok.bin").write_bytes(b"ok")
    results = await asyncio.gather(
        downloads.place_download(root / "gone.bin.part", "gone.bin"),
        downloads.place_download(downloads.part_path("ok.bin"), "ok.bin"),
        return_exceptions=True,
    )
    assert isinstance(results[0], FileNotFoundError)
    assert results[1] == root / "ok.bin" and (root / "ok.bin").read_bytes() == b"ok"


async def test_placing_a_download_and_an_output(store: SqliteStore, root: Path) -> None:
    downloads = DownloadsDir(root, store)
    task = await _task(store, "movie.mkv")
    part = downloads.part_path("movie.mkv")
    part.write_bytes(b"video")
    final = await downloads.place_download(part, "movie.mkv")
    assert final == root / "movie.mkv" and final.read_bytes() == b"video"
    assert not part.exists() and downloads.finished_file(task) == final

    # An output whose name a file already has is placed beside it, numbered.
    (root / "movie.mp4").write_bytes(b"older")
    scratch = scratch_path(root, task.task_id, "mp4")
    scratch.write_bytes(b"transcoded")
    placed = await downloads.place_output(scratch, "movie.mp4")
    assert placed == root / "movie (1).mp4" and placed.read_bytes() == b"transcoded"
    assert (root / "movie.mp4").read_bytes() == b"older"


def _transcoded(task: Task) -> None:
    task.filename = "clip.mp4"
    task.result = {
        "filename": "clip.mp4",
        "size_mb": 0.0,
        "duration_seconds": 1,
        "transcode": {"preset": "mp4", "source_filename": "clip.mkv"},
    }


async def test_delete_removes_a_transcodes_output_and_source(
    store: SqliteStore, root: Path
) -> None:
    downloads = DownloadsDir(root, store)
    task = await _task(store)
    _transcoded(task)
    files = [root / "clip.mp4", root / "clip.mkv", downloads.part_path("clip.mp4")]
    files += [downloads.journal_path("clip.mp4"), scratch_path(root, task.task_id, "mp3")]
    for path in files:
        path.write_bytes(b"x")
    (root / "other.bin").write_bytes(b"not this task's")

    await downloads.delete_files(task, finished_too=False)
    # Without finished_too the finished files stay; partial, journal and scratch ones go.
    assert [p.exists() for p in files] == [True, True, False, False, False]

    await downloads.delete_files(task, finished_too=True)
    assert not any(p.exists() for p in files)
    assert (root / "other.bin").exists()


async def test_delete_never_reaches_outside_the_folder(
    store: SqliteStore, root: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "precious.txt"
    outside.write_text("keep me")
    downloads = DownloadsDir(root, store)
    task = await _task(store, "ok.bin")
    # A result naming a path outside (a tampered row) is reduced to a name inside.
    task.result = {"filename": "../precious.txt", "transcode": {"source_filename": "../../x"}}
    await downloads.delete_files(task, finished_too=True)
    assert outside.read_text() == "keep me"
