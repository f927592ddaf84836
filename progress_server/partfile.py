"""The `.part` file a transfer writes to, off the event loop.

Bytes are gathered into blocks of about a megabyte; each block is written by one worker
thread while another hashes it, so a fast origin never stalls other tasks or sockets on
disk I/O or sha256, and the two costs overlap instead of adding up (both release the
GIL). One block is in flight at a time, which keeps bytes and hash in order while the
loop reads the next block from the socket.

Whatever is on disk is always a prefix of the download (blocks are appended in order and
a failed write leaves only its first part), so any `.part` can be resumed from its size.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

FLUSH_BYTES = 1024 * 1024
_READ_CHUNK = 4 * 1024 * 1024


class PartFile:
    def __init__(self, path: Path, before_write: Callable[[], None] | None = None) -> None:
        self.path = path
        # Asked right before each write, in the writing thread; raising stops the write.
        self._before_write = before_write
        self._fd: int | None = None
        self._hash = hashlib.sha256()
        self._buffer: list[bytes] = []
        self._buffered = 0
        self.size = 0
        self._pending: asyncio.Future[Any] | None = None

    async def open(self, offset: int) -> None:
        """Open for appending at `offset` bytes, hashing what is kept; 0 starts afresh."""
        self.size = await asyncio.to_thread(self._open_sync, offset)

    def _open_sync(self, offset: int) -> int:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
        if offset <= 0:
            flags |= os.O_TRUNC
        fd = os.open(self.path, flags, 0o644)
        try:
            if offset > 0:
                offset = min(offset, os.fstat(fd).st_size)
                os.ftruncate(fd, offset)
                kept = 0
                while kept < offset:
                    block = os.pread(fd, min(_READ_CHUNK, offset - kept), kept)
                    if not block:
                        break
                    self._hash.update(block)
                    kept += len(block)
                offset = kept
            os.lseek(fd, offset, os.SEEK_SET)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return offset

    async def write(self, chunk: bytes) -> None:
        self._buffer.append(chunk)
        self._buffered += len(chunk)
        self.size += len(chunk)
        if self._buffered >= FLUSH_BYTES:
            await self._flush_buffer()

    async def _flush_buffer(self) -> None:
        await self.drain()
        if not self._buffer:
            return
        data = self._take_buffer()
        loop = asyncio.get_running_loop()
        self._pending = asyncio.gather(
            loop.run_in_executor(None, self._write_sync, data),
            loop.run_in_executor(None, self._hash.update, data),
        )

    def _take_buffer(self) -> bytes:
        data = self._buffer[0] if len(self._buffer) == 1 else b"".join(self._buffer)
        self._buffer.clear()
        self._buffered = 0
        return data

    def _write_sync(self, data: bytes) -> None:
        assert self._fd is not None
        if self._before_write is not None:
            self._before_write()
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]

    async def drain(self) -> None:
        if self._pending is not None:
            # Shielded: a cancel must leave the job known, so close() can wait for it.
            await asyncio.shield(self._pending)
            self._pending = None

    async def finish(self) -> str:
        """Flush, fsync and return the sha256 of the whole file."""
        await self._flush_buffer()
        await self.drain()
        await asyncio.to_thread(self._fsync)
        return self._hash.hexdigest()

    def _fsync(self) -> None:
        assert self._fd is not None
        os.fsync(self._fd)

    async def close(self) -> None:
        """Keep what arrived and close; safe after cancellation and errors.

        Never raises for a failed write: this runs while another error (a dropped
        connection, a full disk, a pause) is already on its way up, and the bytes that
        did reach the disk are a valid prefix to resume from.
        """
        try:
            pending, self._pending = self._pending, None
            if pending is not None:
                await _settle(pending)
                if pending.cancelled() or pending.exception() is not None:
                    self._buffer.clear()
            if self._buffer and self._fd is not None:
                loop = asyncio.get_running_loop()
                job = loop.run_in_executor(None, self._write_sync, self._take_buffer())
                await _settle(job)
                if job.exception() is not None:
                    log.warning(
                        "could not keep the last bytes of %s: %s", self.path.name, job.exception()
                    )
        finally:
            if self._fd is not None:
                fd, self._fd = self._fd, None
                os.close(fd)


async def _settle(future: asyncio.Future[Any]) -> None:
    """Wait for a thread job to end, even through a cancel (re-raised afterwards): the
    file must not be closed under a thread still writing to it."""
    cancelled = False
    while not future.done():
        try:
            await asyncio.wait([future])
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_READ_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
