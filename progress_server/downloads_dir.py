"""The downloads folder: the one place that decides where a task's files are, claims unique
names, moves finished files into place and deletes a task's files.

filenames.py holds the pure naming rules (sanitising, numbering, `.part` names); this module
applies them to the folder and to the names other tasks hold in the store. Names are claimed
under one lock, and recorded with the store's conditional write, so no two tasks get one name.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path

from progress_server import filenames
from progress_server.models import JSON, Task
from progress_server.partfile import fsync_dir
from progress_server.store import FilenameTaken, Store

# A transcode's hidden scratch output: named after the task, so a stopped or crashed
# transcode never leaves a half-written file under a real name, and its leftovers are found.
_SCRATCH = ".{task_id}.transcode.{extension}"
_SCRATCH_GLOB = ".{task_id}.transcode.*"
# A media task's yt-dlp folder (its .part, .ytdl and fragment files): named after the task,
# so a resumed or restarted run finds what the last one left and continues from it.
_MEDIA_WORK = ".{task_id}.media"


def part_path(root: Path, filename: str) -> Path:
    """Where `filename` is downloaded until it is complete."""
    return root / filenames.part_name(filename)


def scratch_path(root: Path, task_id: str, extension: str) -> Path:
    """Where a transcode of this task writes before its output is placed."""
    return root / _SCRATCH.format(task_id=task_id, extension=extension)


def produced_names(task: Task) -> list[str]:
    """Every name a task's finished files have: the download, and after a transcode its
    output plus the original kept beside it."""
    names = [task.filename] if task.filename else []
    result: JSON = task.result or {}
    produced = result.get("filename")
    if isinstance(produced, str) and produced and produced != task.filename:
        names.append(filenames.sanitise(produced))
    transcode = result.get("transcode")
    source = transcode.get("source_filename") if isinstance(transcode, dict) else None
    if isinstance(source, str) and source:
        names.append(filenames.sanitise(source))
    return [name for name in names if name]


class DownloadsDir:
    def __init__(self, root: Path, store: Store) -> None:
        self.root = root
        self._store = store
        self._lock = asyncio.Lock()

    def create(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    # -- where things are ------------------------------------------------------------------

    def file_path(self, filename: str) -> Path:
        return self.root / filename

    def part_path(self, filename: str) -> Path:
        return part_path(self.root, filename)

    def media_work_dir(self, task_id: str) -> Path:
        """Where a media task's worker downloads until its file is complete."""
        return self.root / _MEDIA_WORK.format(task_id=task_id)

    def part_size(self, task: Task) -> int:
        """Bytes in the task's `.part` file: after a crash, the truth about how far it got.
        A media task's count is yt-dlp's, kept while its work folder is there."""
        if task.is_media:
            return task.downloaded_bytes if self.has_part(task) else 0
        if task.filename is None:
            return 0
        try:
            return self.part_path(task.filename).stat().st_size
        except FileNotFoundError:
            return 0

    def has_part(self, task: Task) -> bool:
        if task.is_media:
            return self.media_work_dir(task.task_id).is_dir()
        return task.filename is not None and self.part_path(task.filename).exists()

    def finished_file(self, task: Task) -> Path | None:
        """The task's file under its own name, if it is on disk."""
        if task.filename is None:
            return None
        path = self.file_path(task.filename)
        return path if path.is_file() else None

    # -- names -----------------------------------------------------------------------------

    async def claim_for_new(self, wanted: str, record: Callable[[str], Awaitable[None]]) -> str:
        """Pick a free name for a task not stored yet; `record(name)` stores the task with it
        while the lock is held, so no other claim here can pick the same name meanwhile.
        Another node may have stored it a moment ago (FilenameTaken): the next one is tried."""
        async with self._lock:
            refused: set[str] = set()
            while True:
                name = await self._free_name(wanted, refused)
                try:
                    await record(name)
                except FilenameTaken:
                    refused.add(name)
                    continue
                return name

    async def claim(self, task_id: str, wanted: str) -> str:
        """Give a stored task a free name, `wanted` or a numbered variant of it."""
        async with self._lock:
            refused: set[str] = set()
            while True:
                name = await self._free_name(wanted, refused)
                # Conditional in the store: another writer of the same database (a second
                # node) may have taken the name since it was looked up.
                if await self._store.claim_filename(task_id, name):
                    return name
                refused.add(name)

    async def _free_name(self, wanted: str, refused: set[str]) -> str:
        taken = await self._store.filenames_in_use()
        return filenames.unique(self.root, wanted, taken | refused)

    # -- placing ---------------------------------------------------------------------------

    async def place_download(self, part: Path, filename: str) -> Path:
        """Give a complete `.part` file its final name, durably."""
        final = self.file_path(filename)
        await asyncio.to_thread(_move_into_place, part, final)
        return final

    async def place_output(self, scratch: Path, wanted: str) -> Path:
        """Move a processing output in under a name no task uses; the name and the file
        appear together, under the lock, so no two tasks share it."""
        async with self._lock:
            final = self.file_path(await self._free_name(wanted, set()))
            await asyncio.to_thread(_move_into_place, scratch, final)
            return final

    # -- deleting --------------------------------------------------------------------------

    async def delete_files(self, task: Task, finished_too: bool) -> None:
        """Remove the task's partial and scratch files, and with `finished_too` its
        finished ones (a transcode's output and the original it kept)."""
        paths = [self.part_path(task.filename)] if task.filename else []
        if finished_too:
            paths += [self.file_path(name) for name in produced_names(task)]
        # In a thread: unlinking a multi-gigabyte file can hold the loop for a while.
        await asyncio.to_thread(_unlink_all, paths)
        await self.remove_scratch(task.task_id)
        await self.remove_media_work(task.task_id)

    async def remove_media_work(self, task_id: str) -> None:
        """Remove a media task's work folder (once its file is placed, or with the task)."""
        await asyncio.to_thread(shutil.rmtree, self.media_work_dir(task_id), True)

    async def remove_scratch(self, task_id: str) -> None:
        """Remove what a stopped or crashed transcode of this task left behind."""
        pattern = _SCRATCH_GLOB.format(task_id=task_id)
        await asyncio.to_thread(_unlink_all, list(self.root.glob(pattern)))


def _move_into_place(source: Path, final: Path) -> None:
    source.replace(final)
    fsync_dir(final.parent)


def _unlink_all(paths: list[Path]) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
