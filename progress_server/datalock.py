"""One server per data folder.

A second `serve` on the same folder would run restart recovery on the first one's live
tasks (re-queueing and re-downloading them, with events in the shared history) before it
even finds its port taken. An exclusive lock on DATA_DIR/server.lock, taken before the
app opens anything, makes it stop at once with a clear message instead. The kernel drops
the lock when the process ends, however it ends, so a crash never leaves it stuck.
`keys` commands do not take it: they may run beside a server.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType
from typing import Self

LOCK_NAME = "server.lock"


class DataDirBusy(RuntimeError):
    """Another running server holds the folder."""


class DataDirLock:
    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip()
            os.close(fd)
            who = f" (pid {holder})" if holder.isdigit() else ""
            raise DataDirBusy(
                f"another progress-server{who} is already using {self.path.parent}"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> Self:
        if self._fd is None:
            self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
