"""What the engine shares across downloads and what it reports: the HTTP session and URL
policy, connections per host, where segment journals live, and the observer a transfer
tells about its progress."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import aiohttp

from progress_server.engine.journal import SegmentJournal
from progress_server.netpolicy import NetworkPolicy
from progress_server.settings import Settings

if TYPE_CHECKING:
    from progress_server.engine.errors import DownloadError


@dataclass(frozen=True)
class TransferOutcome:
    part_path: Path
    size: int
    # Computed only when the task names a sha256 to check (else nothing would read it).
    sha256: str | None


class TransferObserver(Protocol):
    """What a transfer tells the task running it. Implemented by the scheduler."""

    async def choose_filename(self, content_disposition: str | None) -> str: ...

    async def response_started(
        self, offset: int, total: int | None, etag: str | None, last_modified: str | None
    ) -> None: ...

    async def restarted_from_zero(self, reason: str) -> None: ...

    def check_may_write(self) -> None:
        """Raise to stop the transfer before its next bytes reach the `.part` file (a run
        that lost its task in a cluster). Called from the thread that writes."""

    async def received(self, nbytes: int) -> None: ...

    async def attempt_failed(self, error: DownloadError, attempt: int, delay: float) -> None: ...

    async def connections_changed(self, open_now: int) -> None: ...


class HostConnections:
    """Connections open per host across every download (--max-connections-per-host)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: dict[str, int] = {}

    def take(self, host: str, *, first: bool) -> bool:
        """Count one more connection to `host`. A download's first connection always
        gets one (extra connections never keep a task from starting); an extra one only
        while the host is under the limit."""
        count = self._open.get(host, 0)
        if not first and count >= self.limit:
            return False
        self._open[host] = count + 1
        return True

    def give_back(self, host: str) -> None:
        count = self._open.get(host, 0) - 1
        if count > 0:
            self._open[host] = count
        else:
            self._open.pop(host, None)


@dataclass(frozen=True)
class Network:
    """What a transfer uses to reach origins: shared by every download of the server."""

    settings: Settings
    session: aiohttp.ClientSession
    policy: NetworkPolicy
    hosts: HostConnections
    # Where a split download keeps its segment offsets: (task id, sidecar path) -> journal.
    journals: JournalFactory


JournalFactory = Callable[[str, Path], SegmentJournal]
