"""One download's transfer: where to resume, the first response, the split, and the finish.

An attempt starts from what is known: the segment plan of the attempt before it, else the
journal of a split `.part`, else a one-connection `.part` (a prefix of the file, resumed
from its size), else nothing. Its first request continues the first unfinished segment
(`Range` + `If-Range`) or, with nothing kept, fetches the whole file. When that answer
allows it (a size, a validator, no Content-Encoding, at least two segments' worth of
bytes), the rest is split among extra connections (`SegmentWorkers`) whose ranged answers
are each checked before a byte is kept. Durability overlaps the transfer: what was written
is fdatasync'd every quarter second (split) or every 64 MiB, and only then does the
journal claim it, so the final fsync is short and no crash leaves a claim the disk lacks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from urllib.parse import urlsplit

import aiohttp
from yarl import URL

from progress_server.downloads_dir import journal_path, part_path
from progress_server.engine.connection import Answer, open_response
from progress_server.engine.errors import DownloadError, RestartFromZero, classify, status_error
from progress_server.engine.journal import JournalUnreadable
from progress_server.engine.network import Network, TransferObserver, TransferOutcome
from progress_server.engine.segments import Segment, SegmentPlan
from progress_server.engine.storage import (
    DownloadFiles,
    check_free_space,
    check_size,
    size_or_zero,
)
from progress_server.engine.throttle import Throttle
from progress_server.engine.workers import SegmentWorkers
from progress_server.models import ErrorType, Task

log = logging.getLogger(__name__)

# Free space is checked again after every this many bytes (a statvfs call) while the file
# is not preallocated.
DISK_CHECK_BYTES = 4 * 1024 * 1024
# Restarts from zero within one attempt before the origin is called unstable.
MAX_RESTARTS = 3
# The owner of segments just cut off, until extra connections may take them.
RESERVED = -1


class Transfer:
    """One download, across its attempts: the plan, and the files it fills."""

    def __init__(
        self, net: Network, task: Task, observer: TransferObserver, throttle: Throttle
    ) -> None:
        self.net = net
        self.settings = net.settings
        self.task = task
        self.observer = observer
        self.throttle = throttle
        self.url: str | URL = task.url
        self.host = urlsplit(task.url).hostname or ""
        self.plan: SegmentPlan | None = None
        self.files: DownloadFiles | None = None
        # The ETag or Last-Modified the kept bytes belong to (If-Range).
        self.validator: str | None = None
        self.split_allowed = True
        self.restarts = 0
        self.received = 0
        self._unchecked = 0
        wanted = task.options.get("segments")
        self.wanted = wanted if isinstance(wanted, int) else self.settings.segments

    @property
    def journaled(self) -> bool:
        return self.files is not None and self.files.journaled

    # -- attempts --------------------------------------------------------------------

    async def attempt(self) -> TransferOutcome:
        """One attempt; raises DownloadError (and CancelledError)."""
        try:
            for _ in range(MAX_RESTARTS + 1):
                try:
                    return await self._attempt_once()
                except RestartFromZero as restart:
                    await self._start_over(str(restart))
            raise DownloadError(
                ErrorType.HTTP_ERROR,
                "the file kept changing on the origin while it was fetched",
                retryable=True,
            )
        except Exception as exc:
            error = classify(exc, self.settings)
            if error is None:
                raise
            if error is not exc:
                raise error from exc
            raise

    async def _attempt_once(self) -> TransferOutcome:
        if self.plan is None:
            await self._resume_from_disk()
        elif not self.validator:
            # Without a validator a resumed range could splice two versions.
            await self._start_over("origin gave no validator to resume against")
        else:
            for segment in self.plan.segments:
                segment.pos = segment.written
                segment.owner = None
            assert self.files is not None
            await self.files.after_failure(self.plan)
        first = None
        if self.plan is not None:
            if self.plan.complete and self.journaled:
                return await self._finish()
            # A one-connection `.part` that looks complete is still checked with the origin
            # (a 416 naming that size), as it would be after a crash before the rename.
            first = self.plan.claim(0) or self.plan.segments[0]
        headers = {"Accept-Encoding": "identity"}
        if first is not None:
            headers.update(self.range_headers(first))
        response = await open_response(self.net.session, self.net.policy, self.url, headers)
        try:
            answer = Answer.of(response)
            first = await self._accept_first(response, answer, first)
        except BaseException:
            response.close()
            raise
        if first is None:
            response.release()  # a 416 that proved the file complete on disk
            return await self._finish()
        self.url = response.url
        assert self.files is not None and self.plan is not None
        workers = SegmentWorkers(self)
        syncing = asyncio.create_task(self.files.keep_durable(self.plan, self.validator))
        syncing.add_done_callback(workers.durability_ended)
        try:
            await workers.run(first, response, answer, splittable=self.splittable(answer))
        finally:
            syncing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await syncing
        return await self._finish()

    def range_headers(self, segment: Segment) -> dict[str, str]:
        assert self.plan is not None
        last = "" if segment.end is None or segment.end == self.plan.total else segment.end - 1
        return {"Range": f"bytes={segment.pos}-{last}", "If-Range": self.validator or ""}

    # -- where to start --------------------------------------------------------------

    async def _resume_from_disk(self) -> None:
        task = self.task
        if task.filename is None:
            return
        files = self._files()
        try:
            saved = await files.journal.load()
        except JournalUnreadable:
            # Without its journal a split `.part` cannot be told apart from holes: cut it
            # before the journal goes, so no crash leaves the one without the other.
            await files.open(keep=0)
            await files.forget_journal()
            return
        size = await asyncio.to_thread(size_or_zero, files.path)
        validator = task.etag or task.last_modified
        if saved is not None and size == saved.total:
            plan = SegmentPlan.restore(saved.total, saved.spans, self.settings.min_segment_size)
            if plan is not None and validator and saved.validator == validator:
                self.plan, self.validator, files.journaled = plan, validator, True
                await files.open(keep=None)
                return
            size = 0  # a split `.part` of another version or a broken journal
        if size > 0 and not validator:
            await self.observer.restarted_from_zero("origin gave no validator to resume against")
            size = 0
        await files.open(keep=size)
        if saved is not None:
            await files.forget_journal()  # only once the `.part` no longer needs it
        if size > 0:
            self.plan = SegmentPlan.single(
                task.total_bytes, self.settings.min_segment_size, kept=size
            )
            self.validator = validator

    async def _start_over(self, reason: str) -> None:
        await self.observer.restarted_from_zero(reason)
        self.restarts += 1
        if self.restarts >= 2:
            # An origin whose file changes under every second request cannot be split.
            self.split_allowed = False
        await self._discard()

    async def _discard(self) -> None:
        self.plan = None
        self.validator = None
        if self.files is not None:
            # The `.part` is cut first: a full-size one left without its journal would
            # read as a finished download after a crash.
            await self.files.open(keep=0)
            await self.files.forget_journal()

    # -- the first answer ------------------------------------------------------------

    async def _accept_first(
        self, response: aiohttp.ClientResponse, answer: Answer, first: Segment | None
    ) -> Segment | None:
        """Check the attempt's first answer; the segment its body fills (None: the file
        is already complete on disk)."""
        status = answer.status
        if first is not None and status == 416:
            assert self.plan is not None
            whole = answer.total
            if not self.journaled and whole == first.pos and self.plan.total in (None, whole):
                # The part file already holds every byte (a crash just before the rename).
                first.end = self.plan.total = whole
                await self.observer.response_started(whole, whole, *self._validators())
                return None
            raise RestartFromZero(f"origin cannot continue at byte {first.pos}")
        if status >= 400:
            raise status_error(response)
        if status not in (200, 206):
            raise DownloadError(
                ErrorType.HTTP_ERROR, f"unexpected status {status} from origin", status=status
            )
        if first is not None and status == 206:
            return await self._continue(response, answer, first)
        if first is not None:
            same = answer.validator == self.validator
            if same:
                self.split_allowed = False
            await self.observer.restarted_from_zero(
                "origin does not support ranges" if same else "the file changed on the origin"
            )
            self.restarts += 1
            await self._discard()
        elif status == 206 and (
            answer.first != 0 or (answer.total is not None and answer.stop != answer.total)
        ):
            shown = answer.shown_range(response)
            raise DownloadError(
                ErrorType.HTTP_ERROR, f"origin sent a partial response ({shown}) to a full request"
            )
        return await self._fresh(response, answer)

    async def _continue(
        self, response: aiohttp.ClientResponse, answer: Answer, first: Segment
    ) -> Segment:
        assert self.plan is not None
        plan = self.plan
        asked_stop = first.end if first.end is not None else answer.total
        whole_known = plan.total is None or answer.total is None or answer.total == plan.total
        if not (answer.first == first.pos and answer.stop == asked_stop and whole_known):
            shown = answer.shown_range(response)
            raise RestartFromZero(f"origin answered {shown} to a request for bytes {first.pos}-")
        if not self.same_version(answer):
            raise RestartFromZero("the file changed on the origin")
        if plan.total is None and answer.total is not None:
            plan.total = first.end = answer.total
        check_size(self.settings, plan.total)
        if not self.journaled:  # a split file's space is already reserved
            await check_free_space(self.settings, plan.total, plan.received)
        await self.observer.response_started(plan.received, plan.total, *self._validators())
        return first

    async def _fresh(self, response: aiohttp.ClientResponse, answer: Answer) -> Segment:
        """This response carries the whole file from byte 0: start the plan over with it."""
        task = self.task
        total = answer.total if answer.status == 206 else answer.length
        # The first full response names the version every later range must match.
        task.etag, task.last_modified = answer.etag, None if answer.etag else answer.last_modified
        self.validator = answer.validator
        check_size(self.settings, total)
        if task.filename is None:
            task.filename = await self.observer.choose_filename(
                response.headers.get("Content-Disposition")
            )
        await self._files().start_over(self.settings, total)
        self.plan = SegmentPlan.single(total, self.settings.min_segment_size)
        first = self.plan.claim(0)
        assert first is not None
        await self.observer.response_started(0, total, *self._validators())
        return first

    def same_version(self, answer: Answer) -> bool:
        """Whether a ranged answer names the version the kept bytes belong to (an answer
        without that kind of validator is taken on If-Range's word)."""
        ours = self.validator
        if not ours:
            return True
        theirs = answer.etag if ours.startswith(('"', "W/")) else answer.last_modified
        return theirs is None or theirs == ours

    def _validators(self) -> tuple[str | None, str | None]:
        return self.task.etag, self.task.last_modified

    # -- splitting -------------------------------------------------------------------

    def splittable(self, answer: Answer) -> bool:
        """Whether this download may still be split: its size, version and encoding allow
        it (the answer is the attempt's first), and it is not split already."""
        plan = self.plan
        if plan is None or self.journaled or self.wanted < 2 or not self.split_allowed:
            return False
        return not (
            plan.total is None or answer.encoded or answer.ranges_refused or not self.validator
        )

    async def split(self, segment: Segment) -> bool:
        """Cut what `segment` has left into parts for extra connections; False when it is
        too small. The parts are reserved until the journal and the full-size file exist."""
        plan, files = self.plan, self.files
        assert plan is not None and files is not None
        assert plan.total is not None and self.validator is not None
        added = plan.split(segment, self.wanted)
        if not added:
            return False
        for new in added:
            new.owner = RESERVED
        try:
            # The spans are taken before the sync: only bytes written by then are claimed.
            await files.journal_split(plan.total, self.validator, plan.spans(), plan.written_prefix)
        finally:
            if files.journaled:
                for new in added:
                    new.owner = None
            else:
                plan.unsplit(segment, added)
        log.debug("task %s: split into %d segments", self.task.task_id, len(plan.segments))
        return True

    # -- bytes -----------------------------------------------------------------------

    async def on_bytes(self, nbytes: int) -> None:
        self.received += nbytes
        await self.observer.received(nbytes)
        if self.journaled:
            return  # preallocated: the space is already reserved
        assert self.plan is not None
        max_size = self.settings.max_size
        if max_size is not None and self.plan.received > max_size:
            raise DownloadError(
                ErrorType.SIZE_LIMIT, f"more than the {max_size}-byte limit arrived"
            )
        self._unchecked += nbytes
        if self._unchecked >= DISK_CHECK_BYTES:
            self._unchecked = 0
            await check_free_space(self.settings, self.plan.total, self.plan.received)

    # -- the end ---------------------------------------------------------------------

    async def _finish(self) -> TransferOutcome:
        plan, files = self.plan, self.files
        assert plan is not None and files is not None and plan.total is not None
        digest = await files.finish(plan)
        return TransferOutcome(files.path, plan.total, digest)

    async def close(self) -> None:
        """Leave the `.part` resumable (see DownloadFiles.close)."""
        if self.files is not None:
            await self.files.close(self.plan, self.validator)

    # -- files -----------------------------------------------------------------------

    def _files(self) -> DownloadFiles:
        if self.files is None:
            assert self.task.filename is not None
            root, name = self.settings.downloads_dir, self.task.filename
            journal = self.net.journals(self.task.task_id, journal_path(root, name))
            hashing = self.task.sha256 is not None
            fence = self.observer.check_may_write
            self.files = DownloadFiles(part_path(root, name), hashing, journal, fence)
        return self.files
