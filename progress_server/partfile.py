"""The `.part` file a transfer writes to, off the event loop.

Writes, hashing and fsync run in a worker thread, a megabyte at a time, so a fast origin
never stalls other tasks or sockets on disk I/O. hashlib releases the GIL for large
buffers, so hashing there runs truly beside the loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path
from typing import IO

FLUSH_BYTES = 1024 * 1024
_READ_CHUNK = 4 * 1024 * 1024


class PartFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[bytes] | None = None
        self._hash = hashlib.sha256()
        self._buffer: list[bytes] = []
        self._buffered = 0
        self.size = 0
        self._pending: asyncio.Future[None] | None = None

    async def open(self, offset: int) -> None:
        """Open for appending at `offset` bytes, hashing what is kept; 0 starts afresh."""
        self.size = await asyncio.to_thread(self._open_sync, offset)

    def _open_sync(self, offset: int) -> int:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        mode = "r+b" if offset > 0 and self.path.exists() else "w+b"
        f = open(self.path, mode)
        try:
            if offset > 0:
                f.truncate(offset)
                f.seek(0)
                remaining = offset
                while remaining > 0:
                    block = f.read(min(_READ_CHUNK, remaining))
                    if not block:
                        break
                    self._hash.update(block)
                    remaining -= len(block)
                offset -= remaining
            f.seek(offset)
        except BaseException:
            f.close()
            raise
        self._file = f
        return offset

    async def write(self, chunk: bytes) -> None:
        self._buffer.append(chunk)
        self._buffered += len(chunk)
        self.size += len(chunk)
        if self._buffered >= FLUSH_BYTES:
            await self._flush_buffer()

    async def _flush_buffer(self) -> None:
        # One write in flight at a time keeps bytes in order; the next megabyte is read
        # from the socket while this one is written.
        await self.drain()
        if not self._buffer:
            return
        data = b"".join(self._buffer)
        self._buffer.clear()
        self._buffered = 0
        loop = asyncio.get_running_loop()
        self._pending = loop.run_in_executor(None, self._write_sync, data)

    def _write_sync(self, data: bytes) -> None:
        assert self._file is not None
        self._file.write(data)
        self._hash.update(data)

    async def drain(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            await pending

    async def finish(self) -> str:
        """Flush, fsync and return the sha256 of the whole file."""
        await self._flush_buffer()
        await self.drain()
        await asyncio.to_thread(self._fsync)
        return self._hash.hexdigest()

    def _fsync(self) -> None:
        assert self._file is not None
        self._file.flush()
        os.fsync(self._file.fileno())

    async def close(self) -> None:
        """Write what is buffered and close; safe after cancellation and errors."""
        try:
            pending, self._pending = self._pending, None
            if pending is not None:
                # The thread may still be writing: wait for it even while being cancelled.
                await asyncio.wait([pending])
            if self._buffer and self._file is not None:
                data = b"".join(self._buffer)
                self._buffer.clear()
                await asyncio.to_thread(self._write_sync, data)
        finally:
            if self._file is not None:
                f, self._file = self._file, None
                await asyncio.to_thread(_flush_close, f)


def _flush_close(f: IO[bytes]) -> None:
    try:
        f.flush()
    finally:
        f.close()


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
