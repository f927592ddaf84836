"""Where a split download's segment offsets survive a crash: a sidecar file beside the `.part`.

A split `.part` is preallocated to its full size, so unlike a one-connection `.part` its
size says nothing about how far the transfer got. The journal does: the total, the
validator the bytes belong to, and for each segment how far its bytes are on disk. It is
written only after those bytes were fdatasync'd (the transfer's job), atomically (a temp
file, fsync'd, renamed over), so it never claims more than the disk holds.

`SegmentJournal` is the whole interface the engine needs, so a store could keep the same
facts in its own rows instead of a sidecar. Where the sidecar lives is the downloads
folder's rule (`downloads_dir.journal_path`); what it says is the engine's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from progress_server.downloads_dir import fsync_dir
from progress_server.engine.segments import Span

_FORMAT = 1


@dataclass(frozen=True)
class SavedSegments:
    total: int
    # The ETag or Last-Modified the bytes on disk belong to (sent as If-Range).
    validator: str
    spans: tuple[Span, ...]

    @property
    def kept(self) -> int:
        return sum(written - start for start, _, written in self.spans)


class JournalUnreadable(Exception):
    """A journal exists but cannot be read: the `.part` beside it cannot be trusted."""


class SegmentJournal(Protocol):
    async def load(self) -> SavedSegments | None:
        """The saved segments; None when there are none; JournalUnreadable when they
        exist but cannot be read."""
        ...

    async def save(self, saved: SavedSegments) -> None: ...

    async def remove(self) -> None: ...


class SidecarJournal:
    """The journal as a small JSON file beside the `.part`, at `path`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # The sidecar's directory entry is fsync'd once, when it first appears: the `.part`
        # is preallocated only after that, so no crash leaves a full-size `.part` without
        # the sidecar that says most of it is holes.
        self._entry_durable = False

    async def load(self) -> SavedSegments | None:
        return await asyncio.to_thread(read_sidecar, self.path)

    async def save(self, saved: SavedSegments) -> None:
        await asyncio.to_thread(self._save_sync, saved)

    def _save_sync(self, saved: SavedSegments) -> None:
        body = {
            "format": _FORMAT,
            "total": saved.total,
            "validator": saved.validator,
            "spans": [list(span) for span in saved.spans],
        }
        temp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, json.dumps(body, separators=(",", ":")).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, self.path)
        if not self._entry_durable:
            fsync_dir(self.path.parent)
            self._entry_durable = True

    async def remove(self) -> None:
        await asyncio.to_thread(self._remove_sync)

    def _remove_sync(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self._entry_durable = False


def read_sidecar(path: Path) -> SavedSegments | None:
    """The sidecar's contents; None when there is none; JournalUnreadable when it is not
    one we wrote."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise JournalUnreadable(str(exc)) from exc
    try:
        body: Any = json.loads(raw)
        if body["format"] != _FORMAT:
            raise JournalUnreadable(f"format {body['format']!r}")
        total, validator = body["total"], body["validator"]
        spans = tuple((int(s), int(e), int(w)) for s, e, w in body["spans"])
    except (KeyError, TypeError, ValueError) as exc:
        raise JournalUnreadable(str(exc)) from exc
    if not isinstance(total, int) or not isinstance(validator, str):
        raise JournalUnreadable("total or validator of the wrong type")
    return SavedSegments(total, validator, spans)
