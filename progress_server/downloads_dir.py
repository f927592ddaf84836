"""The downloads folder: the one place that decides where a task's files are, claims unique
names, moves finished files into place and deletes a task's files.

filenames.py holds the pure naming rules (sanitising, numbering, `.part` names); this module
applies them to the folder and to the names other tasks hold in the store. A name being
claimed is held in memory until the store's conditional write of it settles (claims run side
by side; only new tasks' claims and placed outputs take a lock), so no two tasks get one name.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

from progress_server import filenames
from progress_server.models import JSON, Task
from progress_server.store import FilenameTaken, Store

# A transcode's hidden scratch output: named after the task, so a stopped or crashed
# transcode never leaves a half-written file under a real name, and its leftovers are found.
_SCRATCH = ".{task_id}.transcode.{extension}"
_SCRATCH_GLOB = ".{task_id}.transcode.*"
# Beside a split download's `.part`: the offsets each of its segments reached.
_JOURNAL_SUFFIX = ".segments"
_MAX_NAME_BYTES = 255
# A media task's yt-dlp folder (its .part, .ytdl and fragment files): named after the task,
# so a resumed or restarted run finds what the last one left and continues from it.
_MEDIA_WORK = ".{task_id}.media"


def part_path(root: Path, filename: str) -> Path:
    """Where `filename` is downloaded until it is complete."""
    return root / filenames.part_name(filename)


def journal_path(root: Path, filename: str) -> Path:
    """Where a split download of `filename` keeps its segment offsets: `<name>.part.segments`,
    shortened with a hash tag when that is over 255 bytes."""
    part = filenames.part_name(filename)
    name = part + _JOURNAL_SUFFIX
    if len(name.encode()) > _MAX_NAME_BYTES:
        tag = hashlib.sha256(part.encode()).hexdigest()[:8]
        keep = _MAX_NAME_BYTES - len(_JOURNAL_SUFFIX) - len(tag) - 1
        name = part.encode()[:keep].decode(errors="ignore") + "~" + tag + _JOURNAL_SUFFIX
    return root / name


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
        # Orders the claims of new tasks' names and the placing of outputs.
        self._lock = asyncio.Lock()
        # Names being claimed right now, not in the store (or on disk) yet.
        self._held: set[str] = set()
        self._placing = _GroupedPlacing(root)

    def create(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    # -- where things are ------------------------------------------------------------------

    def file_path(self, filename: str) -> Path:
        return self.root / filename

    def part_path(self, filename: str) -> Path:
        return part_path(self.root, filename)

    def journal_path(self, filename: str) -> Path:
        return journal_path(self.root, filename)

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
        while the name is held, so no other claim here can pick the same name meanwhile.
        Another node may have stored it a moment ago (FilenameTaken): the next one is tried."""
        async with self._lock:
            refused: set[str] = set()
            while True:
                name = await self._free_name(wanted, refused)
                try:
                    with self._holding(name):
                        await record(name)
                except FilenameTaken:
                    refused.add(name)
                    continue
                return name

    async def claim(self, task_id: str, wanted: str) -> str:
        """Give a stored task a free name, `wanted` or a numbered variant of it.

        Claims run side by side (many tasks start at once): a name being claimed is held in
        memory until its conditional write settles, so no other claim here picks it. The
        first try skips reading every name the store holds: the conditional write refuses
        a taken one, and only then are the store's names read to pick a variant."""
        refused: set[str] = set()
        while True:
            if refused:
                name = await self._free_name(wanted, refused)
            else:
                name = filenames.unique(self.root, wanted, self._held)
            with self._holding(name):
                # Conditional in the store: another writer of the same database (a second
                # node, or a claim here that settled after the names were read) may have
                # taken the name since it was looked up.
                if await self._store.claim_filename(task_id, name):
                    return name
            refused.add(name)

    async def _free_name(self, wanted: str, refused: set[str]) -> str:
        taken = await self._store.filenames_in_use()
        # No await from here until the caller holds the name.
        return filenames.unique(self.root, wanted, taken | refused | self._held)

    @contextlib.contextmanager
    def _holding(self, name: str) -> Iterator[None]:
        self._held.add(name)
        try:
            yield
        finally:
            self._held.discard(name)

    # -- placing ---------------------------------------------------------------------------

    async def place_download(self, part: Path, filename: str) -> Path:
        """Give a complete `.part` file its final name, durably."""
        final = self.file_path(filename)
        await self._placing.place(part, final)
        return final

    async def place_output(self, scratch: Path, wanted: str) -> Path:
        """Move a processing output in under a name no task uses; the name and the file
        appear together, under the lock, so no two tasks share it."""
        async with self._lock:
            name = await self._free_name(wanted, set())
            with self._holding(name):
                final = self.file_path(name)
                await asyncio.to_thread(_move_into_place, scratch, final)
            return final

    # -- deleting --------------------------------------------------------------------------

    async def delete_files(self, task: Task, finished_too: bool) -> None:
        """Remove the task's partial files (the `.part` and a split one's journal) and
        scratch files, and with `finished_too` its finished ones (a transcode's output and
        the original it kept)."""
        paths: list[Path] = []
        if task.filename:
            paths += [self.part_path(task.filename), self.journal_path(task.filename)]
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


class _GroupedPlacing:
    """Finished downloads renamed into the folder and made durable together: renames asked
    for while a batch runs form the next one, and each batch ends with one fsync of the
    folder (many small files finishing at once cost one folder sync, not one each)."""

    def __init__(self, root: Path) -> None:
        self._root = root
        self._queued: list[tuple[Path, Path, asyncio.Future[None]]] = []
        self._running: asyncio.Task[None] | None = None

    async def place(self, source: Path, final: Path) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queued.append((source, final, done))
        if self._running is None:
            self._running = asyncio.create_task(self._run(), name="place-downloads")
        await asyncio.shield(done)

    async def _run(self) -> None:
        try:
            while self._queued:
                batch, self._queued = self._queued, []
                moves = [(source, final) for source, final, _ in batch]
                try:
                    errors = await asyncio.to_thread(_place_all, self._root, moves)
                except OSError as exc:  # the folder sync failed: none of them is durable
                    errors = [exc] * len(batch)
                for (_, _, done), error in zip(batch, errors, strict=True):
                    if done.done():
                        continue
                    if error is None:
                        done.set_result(None)
                    else:
                        done.set_exception(error)
        finally:
            self._running = None


def _place_all(root: Path, moves: list[tuple[Path, Path]]) -> list[OSError | None]:
    errors: list[OSError | None] = []
    for source, final in moves:
        try:
            source.replace(final)
        except OSError as exc:
            errors.append(exc)
        else:
            errors.append(None)
    fsync_dir(root)
    return errors


def _move_into_place(source: Path, final: Path) -> None:
    source.replace(final)
    fsync_dir(final.parent)


def _unlink_all(paths: list[Path]) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def fsync_dir(directory: Path) -> None:
    """Make the entries of a folder (a rename, a new file) durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
