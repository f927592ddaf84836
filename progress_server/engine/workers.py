"""The connections of one attempt, and when to open, end or replace one.

Every connection works through segments: it fetches one, then takes an unowned one or
steals half of the largest (segments.py), until no work is left. Each ranged answer is
checked before a byte of it is kept (206, exactly the range asked for, the same total and
validator, no Content-Encoding). What a failure does depends on whether the connection is
the last one: an extra connection that is refused a range, or told 429/503 (Retry-After
honoured before one more is tried), just ends and the count goes down; one that drops
after making progress is replaced at once; the last connection's failure is the
attempt's. A different version of the file on any connection restarts from zero, so a
finished file never mixes two versions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

import aiohttp

from progress_server.engine.connection import Answer, Connection, open_response
from progress_server.engine.errors import (
    BUSY_STATUS,
    DownloadError,
    RangeRefused,
    RestartFromZero,
    classify,
    status_error,
)
from progress_server.engine.segments import Segment
from progress_server.engine.watchdog import StallWatchdog
from progress_server.models import ErrorType

if TYPE_CHECKING:
    from progress_server.engine.transfer import Transfer

log = logging.getLogger(__name__)

_MAX_RETRY_AFTER = 600.0
# A first connection at least this fast (10^6 B/s) is not split: the bottleneck is
# elsewhere (disk, CPU), and per-connection throttles sit far below it.
SPLIT_BELOW_BPS = 100_000_000
PROBE_SECONDS = 0.05
RECHECK_SECONDS = 0.5


class SegmentWorkers:
    def __init__(self, transfer: Transfer) -> None:
        assert transfer.plan is not None and transfer.files is not None
        self.t = transfer
        self.plan = transfer.plan
        self.files = transfer.files
        self.target = max(1, transfer.wanted) if transfer.journaled else 1
        self._live: dict[int, asyncio.Task[None]] = {}
        self._next_ident = 1
        self._fatal: BaseException | None = None
        self._last_error: DownloadError | None = None
        self._all_ended = asyncio.Event()
        self._timers: list[asyncio.TimerHandle] = []
        self._stopping = False
        self._splitter: asyncio.Task[None] | None = None
        self._split_settled = asyncio.Event()
        self._split_settled.set()

    async def run(
        self,
        first: Segment,
        response: aiohttp.ClientResponse,
        answer: Answer,
        splittable: bool,
    ) -> None:
        """Fetch every segment; returns when the plan is complete, else raises. With
        `splittable`, the first connection's segment is split once it proves slow."""
        t = self.t
        t.net.hosts.take(t.host, first=True)
        conn = self._spawn(0, first, response, answer)
        self.fill()
        if splittable:
            self._splitter = asyncio.create_task(self._split_when_slow(conn, first))
        try:
            if t.settings.min_speed_bps > 0:
                # The minimum speed is the whole download's, not each connection's.
                async with StallWatchdog(
                    t.settings.stall_timeout,
                    t.settings.min_speed_bps,
                    received=lambda: t.received,
                    throttled_seconds=lambda: t.throttle.waited_seconds,
                ):
                    await self._all_ended.wait()
            else:
                await self._all_ended.wait()
        finally:
            await self._stop_all()
        if self._fatal is not None:
            raise self._fatal
        if not self.plan.complete:
            raise self._last_error or DownloadError(
                ErrorType.NETWORK_ERROR,
                "every connection ended before the file was complete",
                retryable=True,
            )

    def fill(self) -> None:
        """Open extra connections up to the target while there is work for them."""
        t = self.t
        if self._stopping or self._fatal is not None or not t.journaled:
            return
        while len(self._live) < self.target:
            if not t.net.hosts.take(t.host, first=False):
                return
            ident = self._next_ident
            segment = self.plan.claim(ident) or self.plan.steal(ident)
            if segment is None:
                t.net.hosts.give_back(t.host)
                return
            self._next_ident += 1
            self._spawn(ident, segment, None, None)

    def _spawn(
        self,
        ident: int,
        segment: Segment,
        response: aiohttp.ClientResponse | None,
        answer: Answer | None,
    ) -> Connection:
        t = self.t
        conn = Connection(ident, self.files.part, self.files.hasher, t.throttle, t.on_bytes)
        job = asyncio.create_task(
            self._work(conn, segment, response, answer), name=f"connection-{ident}"
        )
        self._live[ident] = job
        # Also when the task was cancelled before its first step, which never runs its
        # `finally`: the host's count would keep the connection for good.
        job.add_done_callback(lambda _: self._ended(ident))
        return conn

    def _ended(self, ident: int) -> None:
        """A connection counts no more (once, from whichever runs first)."""
        if self._live.pop(ident, None) is None:
            return
        self.t.net.hosts.give_back(self.t.host)
        if not self._live or self._fatal is not None:
            self._all_ended.set()
        else:
            self.fill()

    async def _split_when_slow(self, conn: Connection, segment: Segment) -> None:
        """Split the first connection's segment once that connection proves slower than
        SPLIT_BELOW_BPS (checked after PROBE_SECONDS, then every RECHECK_SECONDS) while
        nothing on our side held it back (our speed limit, the disk, a CPU too busy to
        take the bytes already waiting): only then is the connection what limits the
        download. Otherwise more connections would only compete for the same cores."""
        t = self.t
        wait = PROBE_SECONDS
        clock = asyncio.get_running_loop().time
        seen, since = conn.received, clock()
        throttled, disk = t.throttle.waited_seconds, conn.writer.disk_wait
        reads, full = conn.reads, conn.full_reads
        try:
            while not segment.finished and conn.ident in self._live:
                await asyncio.sleep(wait)
                wait = RECHECK_SECONDS
                now = clock()
                speed = (conn.received - seen) / max(now - since, 1e-6)
                # Held back on our side (our speed limit, the disk, or bytes already
                # waiting for us: a busy CPU): more connections would only compete.
                ours = t.throttle.waited_seconds > throttled
                disk_bound = conn.writer.disk_wait - disk > (now - since) / 4
                behind = 4 * (conn.full_reads - full) > conn.reads - reads
                seen, since = conn.received, now
                throttled, disk = t.throttle.waited_seconds, conn.writer.disk_wait
                reads, full = conn.reads, conn.full_reads
                held_back = ours or disk_bound or behind
                if speed >= SPLIT_BELOW_BPS or held_back or conn.received == 0:
                    continue
                remaining = segment.remaining
                if remaining is None or remaining < 2 * self.plan.min_size:
                    return
                self._split_settled.clear()
                try:
                    split = await t.split(segment)
                finally:
                    self._split_settled.set()
                if split:
                    self.target = max(1, t.wanted)
                    self.fill()
                    return
        except Exception as exc:  # a full disk at the preallocation, say
            self._fail(classify(exc, t.settings) or exc)

    async def _work(
        self,
        conn: Connection,
        segment: Segment,
        response: aiohttp.ClientResponse | None,
        answer: Answer | None,
    ) -> None:
        t = self.t

        await t.observer.connections_changed(len(self._live))
        current: Segment | None = segment
        mark = conn.received
        try:
            while current is not None:
                mark = conn.received
                if response is None or answer is None:
                    response, answer = await self._request(current)
                stop = answer.stop if answer.status == 206 else self.plan.total
                consumed = False
                try:
                    async with StallWatchdog(
                        min(t.settings.stall_timeout, t.settings.read_timeout),
                        0.0,
                        received=lambda: conn.received,
                        throttled_seconds=lambda: t.throttle.waited_seconds,
                    ):
                        landed = self.files.on_written(self.plan, current)
                        consumed = await conn.stream(response, current, self.plan, stop, landed)
                finally:
                    if consumed:
                        response.release()
                    else:
                        response.close()
                    response = answer = None
                if not current.finished:
                    self._body_ended(current)
                self.plan.release(current)
                current = await self._next_work(conn.ident)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._ended_by(exc, progressed=conn.received > mark)
        finally:
            if response is not None:
                response.close()
            if current is not None:
                self.plan.release(current)
                # What did not reach the file (a failed write) is fetched again.
                current.pos = current.written
            self._ended(conn.ident)
            await t.observer.connections_changed(len(self._live))

    def _body_ended(self, segment: Segment) -> None:
        if segment.end is None:
            self.plan.end_unknown_total(segment)  # no length given: this was all of it
            return
        raise DownloadError(
            ErrorType.NETWORK_ERROR,
            f"connection closed after {segment.pos} of {segment.end} bytes",
            retryable=True,
        )

    async def _next_work(self, ident: int) -> Segment | None:
        # The parts being cut off a segment right now are work too.
        await self._split_settled.wait()
        if not self.t.journaled or self._stopping:
            return None
        return self.plan.claim(ident) or self.plan.steal(ident)

    async def _request(self, segment: Segment) -> tuple[aiohttp.ClientResponse, Answer]:
        t = self.t
        headers = {"Accept-Encoding": "identity", **t.range_headers(segment)}
        # What was asked: a steal while the answer is on its way moves `segment.end`, and
        # the answer must then still match the request (stream() stops at the new end).
        asked = (segment.pos, segment.end)
        response = await open_response(t.net.session, t.net.policy, t.url, headers)
        try:
            answer = Answer.of(response)
            self._check(response, answer, asked)
        except BaseException:
            response.close()
            raise
        return response, answer

    def _check(
        self, response: aiohttp.ClientResponse, answer: Answer, asked: tuple[int, int | None]
    ) -> None:
        """Raise unless this is exactly the range asked for, from the same version."""
        t, plan = self.t, self.plan
        status = answer.status
        if status >= 400 and status != 416:
            raise status_error(response)
        if status == 206 and answer.total is not None and answer.total != plan.total:
            raise RestartFromZero("the file changed on the origin")
        if status == 206 and not t.same_version(answer):
            raise RestartFromZero("the file changed on the origin")
        if status == 200 and answer.validator != t.validator:
            raise RestartFromZero("the file changed on the origin")
        first, stop = asked
        exact = answer.first == first and answer.stop == stop
        if status == 206 and exact and answer.total == plan.total and not answer.encoded:
            return
        shown = f"{status} {answer.shown_range(response)}"
        wanted = f"bytes {first}-{'' if stop is None else stop - 1}"
        if len(self._live) > 1:
            raise RangeRefused(f"origin answered {shown} to a request for {wanted}")
        # The last connection: nothing else can fetch this segment, so start over.
        if status == 200:
            t.split_allowed = False
            raise RestartFromZero("origin does not support ranges")
        raise RestartFromZero(f"origin answered {shown} to a request for {wanted}")

    def _ended_by(self, exc: Exception, progressed: bool) -> None:
        if isinstance(exc, RestartFromZero):
            self._fail(exc)
            return
        others = len(self._live) - 1
        if isinstance(exc, RangeRefused):
            log.info("task %s: one connection fewer: %s", self.t.task.task_id, exc)
            self.target = max(1, min(self.target, others))
            return
        error = classify(exc, self.t.settings)
        if error is None or not error.retryable:
            self._fail(error or exc)
            return
        self._last_error = error
        if others == 0:
            return  # the attempt fails with it
        if error.status in BUSY_STATUS:
            self.target = max(1, min(self.target, others))
            if error.retry_after is not None:
                delay = min(error.retry_after, _MAX_RETRY_AFTER)
                loop = asyncio.get_running_loop()
                self._timers.append(loop.call_later(delay, self._one_more))
        elif not progressed:
            self.target = max(1, min(self.target, others))

    def durability_ended(self, syncing: asyncio.Future[None]) -> None:
        """The background sync (DownloadFiles.keep_durable) ended: only a failure ends it
        before the workers do, and then the download fails now, not after every byte."""
        error = None if syncing.cancelled() else syncing.exception()
        if error is not None:
            self._fail(classify(error, self.t.settings) or error)

    def _one_more(self) -> None:
        self.target = min(self.target + 1, max(1, self.t.wanted))
        self.fill()

    def _fail(self, exc: BaseException) -> None:
        if self._fatal is None:
            self._fatal = exc
        self._all_ended.set()

    async def _stop_all(self) -> None:
        """Cancel every connection and wait until each has written what it received,
        even through a cancel of our own (re-raised afterwards)."""
        self._stopping = True
        for timer in self._timers:
            timer.cancel()
        jobs = list(self._live.values())
        if self._splitter is not None:
            jobs.append(self._splitter)
        for job in jobs:
            job.cancel()
        cancelled = False
        while not all(job.done() for job in jobs):
            try:
                await asyncio.wait(jobs)
            except asyncio.CancelledError:
                cancelled = True
        for job in jobs:
            with contextlib.suppress(asyncio.CancelledError):
                job.exception()
        if cancelled:
            raise asyncio.CancelledError
