"""One download's files: the `.part`, its sha256 and its journal, and when what was
written becomes durable.

Durability overlaps the transfer. What was written is fdatasync'd in a thread while the
connections go on: every 64 MiB, and for a split download every quarter second, after
which the journal names it. So the final fsync only has the last moments to write, and
the journal never claims a byte the disk may lack (its spans are taken before the sync
starts, so they only count writes that had landed by then).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import shutil
from collections.abc import Callable
from pathlib import Path

from progress_server.engine.errors import DownloadError
from progress_server.engine.journal import SavedSegments, SegmentJournal
from progress_server.engine.partfile import PartFile, PrefixHasher, settle
from progress_server.engine.segments import Segment, SegmentPlan, Span
from progress_server.models import ErrorType
from progress_server.settings import Settings

log = logging.getLogger(__name__)

SYNC_SECONDS = 0.25
SYNC_BYTES = 64 * 1024 * 1024


class DownloadFiles:
    def __init__(
        self,
        part_path: Path,
        hashing: bool,
        journal: SegmentJournal,
        before_write: Callable[[], None] | None = None,
    ) -> None:
        self.part = PartFile(part_path, before_write)
        self.hasher = PrefixHasher(self.part, enabled=hashing)
        self.journal = journal
        # Split, journaled and preallocated: the `.part` size says nothing any more.
        self.journaled = False
        self._unsynced = 0
        self._sync_due = asyncio.Event()

    @property
    def path(self) -> Path:
        return self.part.path

    async def open(self, keep: int | None) -> None:
        """(Re)open the `.part`: `keep=None` as it is, else cut to `keep` bytes."""
        if self.part.is_open:
            await self.hasher.reset()
            self.part.close()
        await self.part.open(keep)

    async def start_over(self, settings: Settings, total: int | None) -> None:
        """Room for `total` bytes, then an empty `.part` (none at all when there is no room),
        in one trip to a thread; then no journal beside it (whatever journal is there, an
        earlier version's or an earlier task's of the same name, is not this plan's). In
        that order: a crash between must not leave a full-size `.part` without its journal,
        which would read as a finished one-connection download."""
        if self.part.is_open:
            await self.hasher.reset()
            self.part.close()
        room = functools.partial(ensure_room, settings, total, 0)
        await self.part.open(keep=0, first=room)
        await self.forget_journal()

    async def forget_journal(self) -> None:
        self.part.fence()
        await self.journal.remove()
        self.journaled = False

    async def journal_split(
        self, total: int, validator: str, spans: tuple[Span, ...], prefix: Callable[[], int]
    ) -> None:
        """Make a freshly split plan durable: the journal first, then the full-size file,
        so no crash leaves a full-size `.part` without the journal that says most of it
        is holes. Finished even through a cancel (re-raised afterwards), so `journaled`
        always tells which of the two the disk holds. On failure the `.part` is cut back
        to `prefix()`, the bytes written, before the journal goes."""

        async def steps() -> None:
            try:
                await self.part.datasync()
                self.part.fence()
                await self.journal.save(SavedSegments(total, validator, spans))
                await self.part.preallocate(total)
            except BaseException:
                await self.part.truncate(prefix())
                await self.forget_journal()
                raise
            self.journaled = True

        job = asyncio.ensure_future(steps())
        await settle(job)
        error = None if job.cancelled() else job.exception()
        if error is not None:
            raise error

    def on_written(self, plan: SegmentPlan, segment: Segment) -> Callable[[int], None]:
        def landed(nbytes: int) -> None:
            segment.written += nbytes
            self._unsynced += nbytes
            if self._unsynced >= SYNC_BYTES:
                self._sync_due.set()
            self.hasher.catch_up(plan.written_prefix())

        return landed

    async def keep_durable(self, plan: SegmentPlan, validator: str | None) -> None:
        """fdatasync what was written while the transfer goes on; then journal it."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._sync_due.wait(), SYNC_SECONDS)
            # Unsplit, the `.part` size is the truth and nothing is journaled: sync by
            # volume only, so the final fsync stays short.
            due = self._sync_due.is_set() or (self.journaled and self._unsynced > 0)
            self._sync_due.clear()
            if due:
                # Waited for even through the cancel that stops this loop: a save still
                # running in its thread would put the journal back after the finish or a
                # discard removed it, or race close()'s own save of it.
                job = asyncio.ensure_future(self._make_durable(plan, validator))
                await settle(job)
                error = None if job.cancelled() else job.exception()
                if error is not None:
                    raise error

    async def _make_durable(self, plan: SegmentPlan, validator: str | None) -> None:
        # Taken before the sync starts: only writes that had landed by then are claimed.
        spans = plan.spans() if self.journaled else None
        self._unsynced = 0
        await self.part.datasync()
        if spans is not None and validator and plan.total is not None:
            self.part.fence()
            await self.journal.save(SavedSegments(plan.total, validator, spans))

    async def after_failure(self, plan: SegmentPlan) -> None:
        """Continue from exactly what reached the file; the hash must not be ahead of it."""
        await self.hasher.settle()
        if self.hasher.hashed > plan.written_prefix():
            await self.hasher.reset()
        await self._trim(plan)

    async def _trim(self, plan: SegmentPlan) -> None:
        """An unsplit `.part` must be exactly the bytes written: its size is what a
        restart resumes from (a failed split may have grown it)."""
        if not self.journaled:
            await self.part.truncate(plan.written_prefix())

    async def finish(self, plan: SegmentPlan) -> str | None:
        """Every byte is written: the sha256 (if wanted), fsync, and no journal left."""
        assert plan.total is not None
        written = plan.written_prefix()
        if written < plan.total:
            # Received is not written: a block that failed to land leaves a hole.
            raise DownloadError(
                ErrorType.DISK_ERROR,
                f"only {written} of {plan.total} bytes reached the disk",
            )
        digest = await self.hasher.digest(plan.total, plan.written_prefix)
        await self.part.fsync()
        if self.journaled:
            await self.forget_journal()
        return digest

    async def close(self, plan: SegmentPlan | None, validator: str | None) -> None:
        """Leave the `.part` resumable: a split one's journal names every written byte.
        A run that may no longer change the files (it lost its task) leaves them as they
        are: another node may be writing them by now, and a cut would lose its bytes."""
        if not self.part.is_open:
            return
        try:
            await self.hasher.settle()
            if not self._may_change():
                return
            if plan is not None and self.journaled:
                job = asyncio.ensure_future(self._make_durable(plan, validator))
                await settle(job)
                if not job.cancelled() and job.exception() is not None:
                    log.warning("could not save the segment journal: %s", job.exception())
            elif plan is not None and not plan.complete:
                await self._trim(plan)
        finally:
            self.part.close()

    def _may_change(self) -> bool:
        try:
            self.part.fence()
        except Exception:  # whatever the fence raises means no
            return False
        return True


def check_size(settings: Settings, total: int | None) -> None:
    max_size = settings.max_size
    if max_size is not None and total is not None and total > max_size:
        raise DownloadError(
            ErrorType.SIZE_LIMIT, f"the file is {total} bytes, the limit is {max_size}"
        )


async def check_free_space(settings: Settings, total: int | None, written: int) -> None:
    """Room for the rest of the file, plus --min-free-space; else a disk_error."""
    # In a thread like every other file-system call here: on a busy disk even a statvfs
    # can wait.
    await asyncio.to_thread(ensure_room, settings, total, written)


def ensure_room(settings: Settings, total: int | None, written: int) -> None:
    """check_free_space, on the calling thread."""
    free = _free_bytes(settings.downloads_dir)
    needed = max((total or 0) - written, 0) + settings.min_free_bytes
    if free < needed:
        raise DownloadError(
            ErrorType.DISK_ERROR,
            f"not enough free disk space: {free} bytes free, {needed} needed",
        )


def size_or_zero(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _free_bytes(directory: Path) -> int:
    directory.mkdir(parents=True, exist_ok=True)
    return shutil.disk_usage(directory).free
