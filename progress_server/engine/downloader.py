"""One download: attempts, automatic retries with backoff, and typed failures.

Each attempt (transfer.py) continues from what the attempt before it left on disk: the
same segments from their own offsets, validated with `If-Range` against the version the
first response named, or the whole file again when the origin cannot or will not continue
it. Retryable failures (network errors, timeouts, 408/429/5xx) are retried after an
exponential backoff with jitter, or after the origin's Retry-After.
"""

from __future__ import annotations

import asyncio
import random

import aiohttp

from progress_server.downloads_dir import journal_path, part_path
from progress_server.engine.errors import DownloadError
from progress_server.engine.journal import JournalUnreadable, SidecarJournal
from progress_server.engine.network import (
    HostConnections,
    JournalFactory,
    Network,
    TransferObserver,
    TransferOutcome,
)
from progress_server.engine.segments import SegmentPlan
from progress_server.engine.storage import size_or_zero
from progress_server.engine.throttle import Throttle, TokenBucket, mbps_to_bps
from progress_server.engine.transfer import Transfer
from progress_server.models import Task
from progress_server.netpolicy import NetworkPolicy, policy_for
from progress_server.settings import Settings

_RETRY_AFTER_CAP = 600.0


class Downloader:
    def __init__(
        self,
        settings: Settings,
        session: aiohttp.ClientSession,
        policy: NetworkPolicy | None = None,
        journals: JournalFactory | None = None,
    ) -> None:
        self.settings = settings
        self.session = session
        self.policy = policy or policy_for(settings)
        # A sidecar beside each split `.part` unless told otherwise.
        self.journals: JournalFactory = journals or (lambda _task_id, path: SidecarJournal(path))
        limit = settings.speed_limit_mbps
        # One bucket shared by every transfer: the server's total bandwidth.
        self.global_bucket = TokenBucket(mbps_to_bps(limit)) if limit else None
        # Shared by every download, so --max-connections-per-host holds across tasks.
        self.hosts = HostConnections(settings.max_connections_per_host)
        self._transfers: dict[str, Transfer] = {}

    async def kept_bytes(self, task: Task) -> int:
        """How many bytes of the task a resume keeps (for recovery and requeue): a split
        `.part`'s journaled bytes, else the size of a one-connection `.part` (a prefix)."""
        if task.filename is None:
            return 0
        root = self.settings.downloads_dir
        size = await asyncio.to_thread(size_or_zero, part_path(root, task.filename))
        journal = self.journals(task.task_id, journal_path(root, task.filename))
        try:
            saved = await journal.load()
        except JournalUnreadable:
            return 0  # the download starts over
        if saved is None or size != saved.total:
            return size
        # The rules of Transfer's resume: another version or spans that do not tile the
        # file mean starting over.
        validator = task.etag or task.last_modified
        tiled = SegmentPlan.restore(saved.total, saved.spans, self.settings.min_segment_size)
        return saved.kept if validator == saved.validator and tiled is not None else 0

    def throttle_for(self, task: Task) -> Throttle:
        """The buckets a task's transfer is subject to; its connections share them."""
        buckets = [self.global_bucket] if self.global_bucket else []
        own = task.options.get("max_speed_mbps")
        if isinstance(own, int | float) and not isinstance(own, bool) and own > 0:
            buckets.append(TokenBucket(mbps_to_bps(own)))
        return Throttle(buckets)

    async def download(self, task: Task, observer: TransferObserver) -> TransferOutcome:
        """Run attempts until one succeeds or retries are spent; raises DownloadError."""
        net = Network(self.settings, self.session, self.policy, self.hosts, self.journals)
        transfer = Transfer(net, task, observer, self.throttle_for(task))
        self._transfers[task.task_id] = transfer
        try:
            attempt = 0
            while True:
                attempt += 1
                try:
                    return await transfer.attempt()
                except DownloadError as error:
                    retries_left = attempt <= self.settings.max_retries
                    if not (error.retryable and retries_left):
                        error.retryable = False
                        error.attempt = attempt
                        raise
                    delay = self.backoff(attempt, error.retry_after)
                    await observer.attempt_failed(error, attempt, delay)
                    await asyncio.sleep(delay)
        finally:
            del self._transfers[task.task_id]
            await transfer.close()

    def segments_of(self, task_id: str) -> list[list[int]] | None:
        """`[start, end, done]` of each segment of a split download running now; None for a
        download on one connection (or none running)."""
        transfer = self._transfers.get(task_id)
        if transfer is None or transfer.plan is None or not transfer.journaled:
            return None
        return transfer.plan.layout()

    def backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), _RETRY_AFTER_CAP)
        ceiling = float(
            min(self.settings.retry_max_delay, self.settings.retry_base_delay * 2 ** (attempt - 1))
        )
        # "Equal jitter": never less than half the step, so retries still back off.
        return ceiling / 2 + random.uniform(0, ceiling / 2)
