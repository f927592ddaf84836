"""The one `.part` file a download writes, at offsets, from worker threads, and its sha256.

Every connection of a download gathers its bytes into blocks of about a megabyte and hands
each block to a worker thread (`os.pwritev`, no join into one buffer) at its own offset,
one block in flight per connection, so the loop reads the next block from the socket while
the disk takes the last. Hashing follows the in-order prefix of the file: a block that
continues it is hashed from memory in a second thread while it is written; bytes that
arrived ahead of the prefix (other segments) are read back from the page cache once the
gap before them has filled. sha256 and the system calls release the GIL, so both cores
work while the loop stays free.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

FLUSH_BYTES = 1024 * 1024
MAX_BLOCK_BYTES = 8 * 1024 * 1024
# A slow connection's bytes reach the file at least this often, so a crash loses little.
FLUSH_SECONDS = 0.1
_READ_CHUNK = 4 * 1024 * 1024
# Bytes ahead of the hashed prefix are read back once at least this much has piled up.
READBACK_BYTES = 8 * 1024 * 1024
_IOV_MAX = 1024


class PartFile:
    def __init__(self, path: Path, before_write: Callable[[], None] | None = None) -> None:
        self.path = path
        # Asked right before each change to the file (a write, a cut, a creation, growing
        # it), on the thread that makes it; raising stops the change (a run that lost its
        # task in a cluster changes the file no more: another node may be writing it now).
        self._before_write = before_write
        self._fd: int | None = None

    def fence(self) -> None:
        """Raise unless this download may still change its files (see `before_write`)."""
        if self._before_write is not None:
            self._before_write()

    @property
    def fd(self) -> int:
        assert self._fd is not None, "the part file is not open"
        return self._fd

    @property
    def is_open(self) -> bool:
        return self._fd is not None

    async def open(self, keep: int | None, first: Callable[[], None] | None = None) -> int:
        """Open for writing. `keep=None` keeps the file as it is (a split download);
        otherwise it is cut to its first `keep` bytes (0: empty). Returns its size.
        `first` runs before, on the same thread (a check whose failure leaves no file).
        Finished even through a cancel (re-raised afterwards): the descriptor the thread
        opens must be ours to close, not leaked."""
        job = asyncio.ensure_future(asyncio.to_thread(self._open_sync, keep, first))
        await settle(job)
        return job.result()

    def _open_sync(self, keep: int | None, first: Callable[[], None] | None = None) -> int:
        self.fence()
        if first is not None:
            first()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC
        if keep == 0:
            flags |= os.O_TRUNC
        fd = os.open(self.path, flags, 0o644)
        try:
            size = os.fstat(fd).st_size
            if keep is not None and keep < size:
                os.ftruncate(fd, keep)
                size = keep
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return size

    async def preallocate(self, total: int) -> None:
        """Reserve the whole file on disk at once (a full disk fails here, not half way)."""
        await asyncio.to_thread(self._preallocate_sync, total)

    def _preallocate_sync(self, total: int) -> None:
        self.fence()
        try:
            os.posix_fallocate(self.fd, 0, total)
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                raise
            # A file system without fallocate: a sparse file of the full size will do.
            if os.fstat(self.fd).st_size < total:
                os.ftruncate(self.fd, total)

    def write_job(self, offset: int, blocks: list[bytes]) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        return loop.run_in_executor(None, self._pwrite_all, offset, blocks)

    def _pwrite_all(self, offset: int, blocks: list[bytes]) -> None:
        self.fence()
        views = [memoryview(b) for b in blocks]
        while views:
            written = os.pwritev(self.fd, views[:_IOV_MAX], offset)
            offset += written
            while views and written >= len(views[0]):
                written -= len(views[0])
                views.pop(0)
            if written:
                views[0] = views[0][written:]

    async def truncate(self, size: int) -> None:
        await asyncio.to_thread(self._truncate_sync, size)

    def _truncate_sync(self, size: int) -> None:
        self.fence()
        os.ftruncate(self.fd, size)

    async def datasync(self) -> None:
        await asyncio.to_thread(os.fdatasync, self.fd)

    async def fsync(self) -> None:
        await asyncio.to_thread(os.fsync, self.fd)

    def read_job(self, start: int, stop: int, sink: Callable[[bytes], Any]) -> Callable[[], None]:
        def read() -> None:
            pos = start
            while pos < stop:
                block = os.pread(self.fd, min(_READ_CHUNK, stop - pos), pos)
                if not block:
                    raise OSError(errno.EIO, f"{self.path.name} ends at {pos}, before {stop}")
                sink(block)
                pos += len(block)

        return read

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)


class PrefixHasher:
    """sha256 of the file's in-order prefix, kept up to date as that prefix grows.

    One job (an in-memory update or a read-back) runs at a time, so the hash object is
    never touched by two threads at once. A disabled hasher does nothing: the digest is
    only worth its CPU when a checksum will be compared with it.
    """

    def __init__(self, part: PartFile, enabled: bool = True) -> None:
        self._part = part
        self.enabled = enabled
        self._hash = hashlib.sha256()
        self.hashed = 0
        self._job: asyncio.Future[None] | None = None
        self.read_back = 0

    @property
    def busy(self) -> bool:
        return self._job is not None and not self._job.done()

    def inline(self, offset: int, blocks: list[bytes], nbytes: int) -> asyncio.Future[None] | None:
        """Hash blocks about to be written at `offset` from memory, if they continue the
        prefix and no other job runs; None otherwise (they are read back later)."""
        if not self.enabled or offset != self.hashed or self.busy:
            return None
        self._surface_error()
        digest = self._hash

        def update() -> None:
            for block in blocks:
                digest.update(block)

        self.hashed += nbytes
        self._job = asyncio.get_running_loop().run_in_executor(None, update)
        return self._job

    def catch_up(self, frontier: int, force: bool = False) -> None:
        """Start reading back written bytes between the hashed prefix and `frontier`."""
        if not self.enabled or self.busy or frontier <= self.hashed:
            return
        if not force and frontier - self.hashed < READBACK_BYTES:
            return
        self._surface_error()
        start, self.hashed = self.hashed, frontier
        self.read_back += frontier - start
        job = self._part.read_job(start, frontier, self._hash.update)
        self._job = asyncio.get_running_loop().run_in_executor(None, job)

    async def digest(self, total: int, frontier: Callable[[], int]) -> str | None:
        """The sha256 of the first `total` bytes, once every one of them is hashed."""
        if not self.enabled:
            return None
        while True:
            await self.settle()
            self._surface_error()
            if self.hashed >= total:
                return self._hash.hexdigest()
            self.catch_up(frontier(), force=True)
            if not self.busy:
                raise RuntimeError(f"hashed {self.hashed} of {total} bytes; the rest is missing")

    async def reset(self) -> None:
        """Start over from byte 0 (the file is being fetched again)."""
        await settle(self._job)
        self._job = None
        self._hash = hashlib.sha256()
        self.hashed = 0

    async def settle(self) -> None:
        await settle(self._job)

    def _surface_error(self) -> None:
        job = self._job
        if job is not None and job.done():
            self._job = None
            error = None if job.cancelled() else job.exception()
            if error is not None:
                raise error


class BlockWriter:
    """One connection's bytes, gathered into blocks and written at its offset in order.

    `on_written(n)` runs on the loop after each block reached the file (the page cache).
    """

    def __init__(self, part: PartFile, hasher: PrefixHasher) -> None:
        self._part = part
        self._hasher = hasher
        self._blocks: list[bytes] = []
        self._buffered = 0
        self._offset = 0
        self._since = 0.0
        self._pending: asyncio.Future[list[Any]] | None = None
        self._on_written: Callable[[int], None] = lambda n: None
        # A block failed to land: nothing after it may be written, or `written` (a count
        # from the segment's start) would cover the hole it left.
        self._failed = False
        # Seconds this connection waited for the disk: a connection the disk holds back
        # would not be helped by more connections.
        self.disk_wait = 0.0

    def bind(self, offset: int, on_written: Callable[[int], None]) -> None:
        """Write from `offset` on; the writer must be drained (nothing buffered)."""
        assert not self._blocks and self._pending is None
        self._offset = offset
        self._on_written = on_written
        self._failed = False

    async def add(self, data: bytes) -> None:
        if not self._blocks:
            self._since = time.monotonic()
        self._blocks.append(data)
        self._buffered += len(data)
        if self._buffered >= FLUSH_BYTES:
            # While the disk is still busy with the block before, this one grows (up to
            # MAX_BLOCK_BYTES): fewer, larger writes when the disk is the slower side.
            if self._pending is None or self._pending.done() or self._buffered >= MAX_BLOCK_BYTES:
                await self.flush()
        elif time.monotonic() - self._since >= FLUSH_SECONDS:
            await self.flush()

    async def flush(self) -> None:
        """Hand what is buffered to a thread (after the block before it is done)."""
        await self.drain()
        self._submit()

    def _submit(self) -> None:
        if not self._blocks:
            return
        blocks, nbytes = self._blocks, self._buffered
        self._blocks, self._buffered = [], 0
        offset, on_written = self._offset, self._on_written
        self._offset += nbytes
        jobs = [self._part.write_job(offset, blocks)]
        hashing = self._hasher.inline(offset, blocks, nbytes)
        if hashing is not None:
            jobs.append(hashing)
        # return_exceptions: the gather ends only when both threads have, never while one
        # still uses the file.
        pending = asyncio.gather(*jobs, return_exceptions=True)

        def landed(done: asyncio.Future[list[Any]]) -> None:
            if not done.cancelled() and _first_error(done.result()) is None:
                on_written(nbytes)

        pending.add_done_callback(landed)
        self._pending = pending

    async def drain(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            waited_from = None if pending.done() else time.monotonic()
            # Shielded: a cancel must not abandon a thread still writing to the file.
            error = _first_error(await asyncio.shield(pending))
            if waited_from is not None:
                self.disk_wait += time.monotonic() - waited_from
            if error is not None:
                self._failed = True
                raise error

    async def close(self) -> None:
        """Write everything buffered and wait for it, even through a cancel (re-raised
        afterwards): the bytes that arrived are kept. Never raises for a failed write:
        this runs while another error is on its way up, and a block that failed simply
        never counts as written (nor does anything buffered after it)."""
        pending, self._pending = self._pending, None
        await settle(pending)
        if pending is not None and not pending.cancelled():
            self._failed = self._failed or _first_error(pending.result()) is not None
        if self._failed:
            self._blocks, self._buffered = [], 0
            return
        self._submit()
        await settle(self._pending)
        self._pending = None


def _first_error(results: list[Any]) -> BaseException | None:
    return next((r for r in results if isinstance(r, BaseException)), None)


async def settle(future: asyncio.Future[Any] | None) -> None:
    """Wait for a thread job to end, even through a cancel (re-raised afterwards): the file
    must not be closed under a thread still using it. The job's own error is not raised."""
    if future is None:
        return
    cancelled = False
    while not future.done():
        try:
            await asyncio.wait([future])
        except asyncio.CancelledError:
            cancelled = True
    if not future.cancelled():
        future.exception()  # retrieved, so asyncio does not log it as never retrieved
    if cancelled:
        raise asyncio.CancelledError


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_READ_CHUNK):
            digest.update(block)
    return digest.hexdigest()
