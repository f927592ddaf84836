"""One download: HTTP with validated resume, automatic retries, and typed failures.

The `.part` file on disk is the truth for how far a transfer got: every attempt, after a
dropped connection or a crash, resumes from its size with `Range` + `If-Range` against the
validator the first response sent, and starts over from zero when the origin cannot or
will not continue the same file. Redirects are followed here, one hop at a time, so the
network policy sees every URL before it is fetched.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import math
import random
import shutil
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Protocol

import aiohttp
from yarl import URL

from progress_server.downloads_dir import part_path
from progress_server.models import ErrorType, Task
from progress_server.netpolicy import NetworkPolicy, PolicyViolation, policy_for
from progress_server.partfile import PartFile
from progress_server.settings import Settings
from progress_server.throttle import Throttle, TokenBucket, mbps_to_bps
from progress_server.watchdog import Stalled, StallWatchdog

log = logging.getLogger(__name__)

RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})
REDIRECT_STATUS = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 10
# Free space is checked again after every this many bytes written (a statvfs call).
DISK_CHECK_BYTES = 4 * 1024 * 1024
_RETRY_AFTER_CAP = 600.0


class DownloadError(Exception):
    def __init__(
        self,
        error_type: ErrorType,
        message: str,
        *,
        retryable: bool = False,
        retry_after: float | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message
        self.retryable = retryable
        self.retry_after = retry_after
        self.status = status
        # Which attempt failed; set when the error leaves download().
        self.attempt: int | None = None


class _RestartFromZero(Exception):
    """The origin will not continue the bytes on disk; fetch the whole file again."""


@dataclass(frozen=True)
class TransferOutcome:
    part_path: Path
    size: int
    sha256: str


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


class Downloader:
    def __init__(
        self,
        settings: Settings,
        session: aiohttp.ClientSession,
        policy: NetworkPolicy | None = None,
    ) -> None:
        self.settings = settings
        self.session = session
        self.policy = policy or policy_for(settings)
        limit = settings.speed_limit_mbps
        # One bucket shared by every transfer: the server's total bandwidth.
        self.global_bucket = TokenBucket(mbps_to_bps(limit)) if limit else None

    def part_path(self, filename: str) -> Path:
        return part_path(self.settings.downloads_dir, filename)

    def throttle_for(self, task: Task) -> Throttle:
        buckets = [self.global_bucket] if self.global_bucket else []
        own = task.options.get("max_speed_mbps")
        if isinstance(own, int | float) and not isinstance(own, bool) and own > 0:
            buckets.append(TokenBucket(mbps_to_bps(own)))
        return Throttle(buckets)

    async def download(self, task: Task, observer: TransferObserver) -> TransferOutcome:
        """Run attempts until one succeeds or retries are spent; raises DownloadError."""
        throttle = self.throttle_for(task)
        attempt = 0
        while True:
            attempt += 1
            try:
                return await self._attempt(task, observer, throttle)
            except DownloadError as error:
                retries_left = attempt <= self.settings.max_retries
                if not (error.retryable and retries_left):
                    error.retryable = False
                    error.attempt = attempt
                    raise
                delay = self.backoff(attempt, error.retry_after)
                await observer.attempt_failed(error, attempt, delay)
                await asyncio.sleep(delay)

    def backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), _RETRY_AFTER_CAP)
        ceiling = float(
            min(self.settings.retry_max_delay, self.settings.retry_base_delay * 2 ** (attempt - 1))
        )
        # "Equal jitter": never less than half the step, so retries still back off.
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    async def _attempt(
        self, task: Task, observer: TransferObserver, throttle: Throttle
    ) -> TransferOutcome:
        offset = 0
        if task.filename is not None:
            offset = await asyncio.to_thread(_size_or_zero, self.part_path(task.filename))
        if offset > 0 and not (task.etag or task.last_modified):
            await observer.restarted_from_zero("origin gave no validator to resume against")
            offset = 0
        try:
            try:
                return await self._fetch(task, observer, throttle, offset)
            except _RestartFromZero as restart:
                await observer.restarted_from_zero(str(restart))
                # Without a Range header the origin cannot answer with the wrong range.
                return await self._fetch(task, observer, throttle, 0)
        except DownloadError:
            raise
        except Stalled as exc:
            raise DownloadError(ErrorType.TIMEOUT, str(exc), retryable=True) from exc
        except PolicyViolation as exc:
            raise DownloadError(ErrorType.INVALID_URL, str(exc)) from exc
        except aiohttp.InvalidURL as exc:
            raise DownloadError(ErrorType.INVALID_URL, f"invalid URL: {exc}") from exc
        except aiohttp.ConnectionTimeoutError as exc:
            raise DownloadError(
                ErrorType.TIMEOUT,
                f"could not connect within {self.settings.connect_timeout:g} s",
                retryable=True,
            ) from exc
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise DownloadError(
                ErrorType.TIMEOUT,
                f"the origin sent nothing for {self.settings.read_timeout:g} s",
                retryable=True,
            ) from exc
        except aiohttp.ClientPayloadError as exc:
            raise DownloadError(
                ErrorType.NETWORK_ERROR,
                "connection closed before the whole body arrived",
                retryable=True,
            ) from exc
        except aiohttp.ClientConnectorCertificateError as exc:
            raise DownloadError(
                ErrorType.NETWORK_ERROR, "the origin's TLS certificate is not valid"
            ) from exc
        except (aiohttp.ClientError, ConnectionError) as exc:
            raise DownloadError(ErrorType.NETWORK_ERROR, _describe(exc), retryable=True) from exc
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise DownloadError(ErrorType.DISK_ERROR, "disk full") from exc
            raise DownloadError(ErrorType.DISK_ERROR, f"cannot write: {exc.strerror}") from exc

    async def _fetch(
        self, task: Task, observer: TransferObserver, throttle: Throttle, offset: int
    ) -> TransferOutcome:
        headers = {"Accept-Encoding": "identity"}
        if offset > 0:
            headers["Range"] = f"bytes={offset}-"
            headers["If-Range"] = task.etag or task.last_modified or ""
        async with self._open(task.url, headers) as response:
            return await self._receive(task, observer, throttle, response, offset)

    @asynccontextmanager
    async def _open(
        self, url: str, headers: dict[str, str]
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """GET `url`, following at most MAX_REDIRECTS redirects, each hop checked first."""
        try:
            current = URL(url)
        except ValueError as exc:
            raise DownloadError(ErrorType.INVALID_URL, f"invalid URL: {exc}") from exc
        for _ in range(MAX_REDIRECTS + 1):
            self.policy.check_url(current)
            response = await self.session.get(
                current, headers=headers, allow_redirects=False, auto_decompress=False
            )
            location = response.headers.get("Location")
            if response.status in REDIRECT_STATUS and location:
                response.release()
                try:
                    current = current.join(URL(location))
                except ValueError as exc:
                    raise DownloadError(
                        ErrorType.INVALID_URL, "the origin redirected to an invalid URL"
                    ) from exc
                continue
            try:
                yield response
            except BaseException:
                # Never hand a half-read connection back to the pool.
                response.close()
                raise
            response.release()
            return
        raise DownloadError(
            ErrorType.HTTP_ERROR, f"more than {MAX_REDIRECTS} redirects (a redirect loop?)"
        )

    async def _receive(
        self,
        task: Task,
        observer: TransferObserver,
        throttle: Throttle,
        response: aiohttp.ClientResponse,
        offset: int,
    ) -> TransferOutcome:
        status = response.status
        if status == 416 and offset > 0:
            _, _, whole = _content_range(response.headers.get("Content-Range"))
            if whole == offset and task.total_bytes in (None, whole):
                # The part file already holds every byte (a crash just before the rename).
                return await self._complete_on_disk(task, observer, offset)
            raise _RestartFromZero(f"origin cannot continue at byte {offset}")
        if status >= 400:
            raise DownloadError(
                ErrorType.HTTP_ERROR,
                f"origin answered {status} {response.reason or ''}".strip(),
                retryable=status in RETRYABLE_STATUS,
                retry_after=_retry_after(response.headers.get("Retry-After")),
                status=status,
            )
        if status not in (200, 206):
            raise DownloadError(
                ErrorType.HTTP_ERROR, f"unexpected status {status} from origin", status=status
            )
        length = _int_or_none(response.headers.get("Content-Length"))
        etag = _strong_etag(response.headers.get("ETag"))
        last_modified = response.headers.get("Last-Modified")

        if status == 206:
            total = self._check_range(task, response, offset)
        else:
            if offset > 0:
                same = (etag or last_modified) == (task.etag or task.last_modified)
                await observer.restarted_from_zero(
                    "origin does not support ranges" if same else "the file changed on the origin"
                )
                offset = 0
            total = length
            # The first full response names the version every later resume must match.
            task.etag, task.last_modified = etag, None if etag else last_modified

        max_size = self.settings.max_size
        if max_size is not None and total is not None and total > max_size:
            raise DownloadError(
                ErrorType.SIZE_LIMIT, f"the file is {total} bytes, the limit is {max_size}"
            )
        if task.filename is None:
            task.filename = await observer.choose_filename(
                response.headers.get("Content-Disposition")
            )
        await self._check_disk(total, offset)
        await observer.response_started(offset, total, task.etag, task.last_modified)
        part = PartFile(self.part_path(task.filename), before_write=observer.check_may_write)
        try:
            await part.open(offset)
            watchdog = StallWatchdog(
                self.settings.stall_timeout,
                self.settings.min_speed_bps,
                received=lambda: part.size,
                throttled_seconds=lambda: throttle.waited_seconds,
            )
            async with watchdog:
                await self._stream(response, part, observer, throttle, total)
            if total is not None and part.size != total:
                raise DownloadError(
                    ErrorType.NETWORK_ERROR,
                    f"connection closed after {part.size} of {total} bytes",
                    retryable=True,
                )
            digest = await part.finish()
        finally:
            await part.close()
        return TransferOutcome(part.path, part.size, digest)

    def _check_range(self, task: Task, response: aiohttp.ClientResponse, offset: int) -> int | None:
        """The total size from a 206's Content-Range, if it continues exactly at `offset`."""
        start, end, total = _content_range(response.headers.get("Content-Range"))
        known = task.total_bytes
        if start == offset and (total is None or end is None or end == total - 1):
            if known is None or total is None or total == known or offset == 0:
                return total
        shown = response.headers.get("Content-Range") or "no Content-Range"
        if offset == 0:
            raise DownloadError(
                ErrorType.HTTP_ERROR, f"origin sent a partial response ({shown}) to a full request"
            )
        raise _RestartFromZero(f"origin answered {shown} to a request for bytes {offset}-")

    async def _stream(
        self,
        response: aiohttp.ClientResponse,
        part: PartFile,
        observer: TransferObserver,
        throttle: Throttle,
        total: int | None,
    ) -> None:
        content = response.content
        chunks = (
            content.iter_chunked(throttle.slice_bytes) if throttle.limited else (content.iter_any())
        )
        max_size = self.settings.max_size
        next_disk_check = part.size + DISK_CHECK_BYTES
        async for chunk in chunks:
            await part.write(chunk)
            size = part.size
            if max_size is not None and size > max_size:
                raise DownloadError(
                    ErrorType.SIZE_LIMIT, f"more than the {max_size}-byte limit arrived"
                )
            if size >= next_disk_check:
                next_disk_check = size + DISK_CHECK_BYTES
                await self._check_disk(total, size)
            if throttle.limited:
                # Paid for before it counts: a reading never runs a slice ahead of the limit.
                await throttle.take(len(chunk))
            await observer.received(len(chunk))

    async def _complete_on_disk(
        self, task: Task, observer: TransferObserver, size: int
    ) -> TransferOutcome:
        assert task.filename is not None
        await observer.response_started(size, size, task.etag, task.last_modified)
        part = PartFile(self.part_path(task.filename), before_write=observer.check_may_write)
        try:
            await part.open(size)
            digest = await part.finish()
        finally:
            await part.close()
        return TransferOutcome(part.path, part.size, digest)

    async def _check_disk(self, total: int | None, written: int) -> None:
        # In a thread like every other file-system call here: on a busy disk even a
        # statvfs can wait.
        free = await asyncio.to_thread(_free_bytes, self.settings.downloads_dir)
        needed = max((total or 0) - written, 0) + self.settings.min_free_bytes
        if free < needed:
            raise DownloadError(
                ErrorType.DISK_ERROR,
                f"not enough free disk space: {free} bytes free, {needed} needed",
            )


def _size_or_zero(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _free_bytes(directory: Path) -> int:
    directory.mkdir(parents=True, exist_ok=True)
    return shutil.disk_usage(directory).free


def _describe(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect to {exc.host}:{exc.port}"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the origin closed the connection"
    text = str(exc) or type(exc).__name__
    return text[:300]


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _strong_etag(value: str | None) -> str | None:
    # If-Range needs a strong validator; a weak ETag would make every resume start over.
    if value and not value.startswith("W/"):
        return value
    return None


def _content_range(value: str | None) -> tuple[int | None, int | None, int | None]:
    """(first, last, total) of "bytes 100-199/1000", "bytes 100-199/*" or "bytes */1000"."""
    if not value or not value.startswith("bytes "):
        return None, None, None
    span, _, whole = value[6:].strip().partition("/")
    try:
        total = None if whole == "*" else int(whole)
        if span == "*":
            return None, None, total
        first, _, last = span.partition("-")
        return int(first), int(last), total
    except ValueError:
        return None, None, None


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP-date."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(seconds, 0.0) if math.isfinite(seconds) else None
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(moment.timestamp() - time.time(), 0.0)
