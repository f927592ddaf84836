"""ProgressRelay: a node's progress events leave in group commits, one batch at a time.

Every progress event takes a seq from the cluster's one counter row, and every commit on
that row queues all the others (see eventlog). So a node does not commit once per event:
while one batch is on its way, the events published meanwhile gather into the next. An
idle node sends a lone event at once; a busy one sends about one batch per round trip,
however many downloads it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from progress_server.cluster.eventlog import publish_progress
from progress_server.models import Event, Progress

if TYPE_CHECKING:
    import asyncpg

_Waiting = tuple[Event, Progress, "asyncio.Future[Event]"]


class ProgressRelay:
    """Publishes progress events for one node, batching those that arrive together."""

    def __init__(self, pool: asyncpg.Pool[asyncpg.Record]) -> None:
        self._pool = pool
        self._waiting: list[_Waiting] = []
        self._sender: asyncio.Task[None] | None = None
        self.batches = 0

    async def publish(self, draft: Event, progress: Progress) -> Event:
        """Send one progress event; returns it with the seq it was given."""
        future: asyncio.Future[Event] = asyncio.get_running_loop().create_future()
        self._waiting.append((draft, progress, future))
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._send(), name="progress-relay")
        return await future

    async def close(self) -> None:
        """Stop sending; events still waiting are cancelled (progress is never owed)."""
        if self._sender is not None:
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender
        for _, _, future in self._waiting:
            future.cancel()
        self._waiting = []

    async def _send(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting, []
            try:
                sent = await publish_progress(self._pool, [(d, p) for d, p, _ in batch])
            except asyncio.CancelledError:
                for _, _, future in batch:
                    future.cancel()
                raise
            except Exception as exc:
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            self.batches += 1
            for (_, _, future), event in zip(batch, sent, strict=True):
                # A publisher cancelled meanwhile no longer waits for its seq.
                if not future.done():
                    future.set_result(event)
