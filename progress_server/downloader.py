"""One download: HTTP with validated resume, automatic retries, and typed failures.

The `.part` file on disk is the truth for how far a transfer got: every attempt, after a
dropped connection or a crash, resumes from its size with `Range` + `If-Range` against the
validator the first response sent, and starts over from zero when the origin cannot or
will not continue the same file.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import random
import shutil
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Protocol

import aiohttp

from progress_server import filenames
from progress_server.models import ErrorType, Task
from progress_server.partfile import PartFile
from progress_server.settings import Settings

log = logging.getLogger(__name__)

RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})
MAX_REDIRECTS = 10
# Free space is checked again after every this many bytes written.
_DISK_CHECK_BYTES = 64 * 1024 * 1024
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

    async def received(self, nbytes: int) -> None: ...

    async def attempt_failed(self, error: DownloadError, attempt: int, delay: float) -> None: ...


class Downloader:
    def __init__(self, settings: Settings, session: aiohttp.ClientSession) -> None:
        self.settings = settings
        self.session = session

    def part_path(self, filename: str) -> Path:
        return self.settings.downloads_dir / filenames.part_name(filename)

    async def download(self, task: Task, observer: TransferObserver) -> TransferOutcome:
        """Run attempts until one succeeds or retries are spent; raises DownloadError."""
        attempt = 0
        while True:
            attempt += 1
            try:
                return await self._attempt(task, observer)
            except DownloadError as error:
                retries_left = attempt <= self.settings.max_retries
                if not (error.retryable and retries_left):
                    error.retryable = False
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

    async def _attempt(self, task: Task, observer: TransferObserver) -> TransferOutcome:
        offset = 0
        if task.filename is not None:
            part = self.part_path(task.filename)
            offset = part.stat().st_size if part.exists() else 0
        headers = {"Accept-Encoding": "identity"}
        validator = task.etag or task.last_modified
        if offset > 0 and validator:
            headers["Range"] = f"bytes={offset}-"
            headers["If-Range"] = validator
        elif offset > 0:
            await observer.restarted_from_zero("origin gave no validator to resume against")
            offset = 0
        try:
            async with self.session.get(
                task.url,
                headers=headers,
                max_redirects=MAX_REDIRECTS,
                auto_decompress=False,
            ) as response:
                return await self._receive(task, observer, response, offset)
        except DownloadError:
            raise
        except aiohttp.TooManyRedirects as exc:
            raise DownloadError(
                ErrorType.HTTP_ERROR, f"more than {MAX_REDIRECTS} redirects"
            ) from exc
        except aiohttp.InvalidURL as exc:
            raise DownloadError(ErrorType.INVALID_URL, f"invalid URL: {exc}") from exc
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise DownloadError(
                ErrorType.TIMEOUT, "the origin sent nothing for too long", retryable=True
            ) from exc
        except aiohttp.ClientPayloadError as exc:
            raise DownloadError(
                ErrorType.NETWORK_ERROR,
                "connection closed before the whole body arrived",
                retryable=True,
            ) from exc
        except (aiohttp.ClientError, ConnectionError) as exc:
            raise DownloadError(ErrorType.NETWORK_ERROR, _describe(exc), retryable=True) from exc
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise DownloadError(ErrorType.DISK_ERROR, "disk full") from exc
            raise DownloadError(ErrorType.DISK_ERROR, f"cannot write: {exc.strerror}") from exc

    async def _receive(
        self,
        task: Task,
        observer: TransferObserver,
        response: aiohttp.ClientResponse,
        offset: int,
    ) -> TransferOutcome:
        status = response.status
        if status >= 400:
            raise DownloadError(
                ErrorType.HTTP_ERROR,
                f"origin answered {status} {response.reason or ''}".strip(),
                retryable=status in RETRYABLE_STATUS,
                retry_after=_retry_after(response.headers.get("Retry-After")),
                status=status,
            )
        if status not in (200, 206):
            raise DownloadError(ErrorType.HTTP_ERROR, f"unexpected status {status} from origin")
        length = _int_or_none(response.headers.get("Content-Length"))
        etag = _strong_etag(response.headers.get("ETag"))
        last_modified = response.headers.get("Last-Modified")

        if offset > 0 and status == 206:
            start, range_total = _content_range(response.headers.get("Content-Range"))
            total = range_total if range_total is not None else _plus(offset, length)
            if start != offset:
                await observer.restarted_from_zero(
                    f"origin resumed at byte {start}, expected {offset}"
                )
                raise DownloadError(
                    ErrorType.NETWORK_ERROR, "origin resumed at the wrong offset", retryable=True
                )
        elif offset > 0:
            changed = (etag or last_modified) != (task.etag or task.last_modified)
            await observer.restarted_from_zero(
                "the file changed on the origin" if changed else "origin does not support ranges"
            )
            offset = 0
            total = length
        else:
            total = length
        if status == 200 or (task.etag is None and task.last_modified is None):
            # The first full response names the version every later resume must match.
            task.etag, task.last_modified = etag, None if etag else last_modified

        max_size = self.settings.max_size
        if max_size is not None and total is not None and total > max_size:
            raise DownloadError(
                ErrorType.SIZE_LIMIT, f"file is {total} bytes, the limit is {max_size}"
            )
        if task.filename is None:
            task.filename = await observer.choose_filename(
                response.headers.get("Content-Disposition")
            )
        part = PartFile(self.part_path(task.filename))
        self._check_disk(total, offset)
        await observer.response_started(offset, total, task.etag, task.last_modified)
        try:
            await part.open(offset)
            since_disk_check = 0
            async for chunk in response.content.iter_any():
                await part.write(chunk)
                since_disk_check += len(chunk)
                if max_size is not None and part.size > max_size:
                    raise DownloadError(
                        ErrorType.SIZE_LIMIT, f"more than the {max_size}-byte limit arrived"
                    )
                if since_disk_check >= _DISK_CHECK_BYTES:
                    since_disk_check = 0
                    self._check_disk(total, part.size)
                await observer.received(len(chunk))
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

    def _check_disk(self, total: int | None, written: int) -> None:
        downloads = self.settings.downloads_dir
        downloads.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(downloads).free
        needed = max((total or 0) - written, 0) + self.settings.min_free_bytes
        if free < needed:
            raise DownloadError(
                ErrorType.DISK_ERROR,
                f"not enough free disk space: {free} bytes free, {needed} needed",
            )


def _describe(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect to {exc.host}:{exc.port}"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the origin closed the connection"
    text = str(exc) or type(exc).__name__
    return text[:300]


def _plus(offset: int, length: int | None) -> int | None:
    return None if length is None else offset + length


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


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    # "bytes 100-199/1000" or "bytes 100-199/*"
    if not value or not value.startswith("bytes "):
        return None, None
    try:
        span, _, total = value[6:].partition("/")
        start = int(span.split("-", 1)[0])
        return start, (None if total == "*" else int(total))
    except ValueError:
        return None, None


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(moment.timestamp() - time.time(), 0.0)
