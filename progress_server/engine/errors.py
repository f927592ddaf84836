"""How a transfer fails: the typed error a task reports, and the two signals the engine
passes between a connection and the download running it."""

from __future__ import annotations

import errno

import aiohttp

from progress_server.engine.headers import retry_after
from progress_server.engine.watchdog import Stalled
from progress_server.models import ErrorType
from progress_server.netpolicy import PolicyViolation
from progress_server.settings import Settings

RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})
# On an extra connection these mean "fewer connections, please", not "fail".
BUSY_STATUS = frozenset({429, 503})


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


def status_error(response: aiohttp.ClientResponse) -> DownloadError:
    """The failure an origin's 4xx or 5xx answer stands for (retried when it may pass)."""
    status = response.status
    return DownloadError(
        ErrorType.HTTP_ERROR,
        f"origin answered {status} {response.reason or ''}".strip(),
        retryable=status in RETRYABLE_STATUS,
        retry_after=retry_after(response.headers.get("Retry-After")),
        status=status,
    )


class RestartFromZero(Exception):
    """The origin will not continue the bytes on disk; fetch the whole file again."""


class RangeRefused(Exception):
    """A ranged request was not answered with exactly the range asked for, from the same
    version of the file: that connection ends, the download goes on with the others."""


def classify(exc: BaseException, settings: Settings) -> DownloadError | None:
    """The DownloadError an exception from a transfer stands for; None if it is a bug."""
    if isinstance(exc, DownloadError):
        return exc
    if isinstance(exc, Stalled):
        return DownloadError(ErrorType.TIMEOUT, str(exc), retryable=True)
    if isinstance(exc, PolicyViolation):
        return DownloadError(ErrorType.INVALID_URL, str(exc))
    if isinstance(exc, aiohttp.InvalidURL):
        return DownloadError(ErrorType.INVALID_URL, f"invalid URL: {exc}")
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return DownloadError(
            ErrorType.TIMEOUT,
            f"could not connect within {settings.connect_timeout:g} s",
            retryable=True,
        )
    if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
        return DownloadError(
            ErrorType.TIMEOUT,
            f"the origin sent nothing for {settings.read_timeout:g} s",
            retryable=True,
        )
    if isinstance(exc, aiohttp.ClientPayloadError):
        return DownloadError(
            ErrorType.NETWORK_ERROR,
            "connection closed before the whole body arrived",
            retryable=True,
        )
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return DownloadError(ErrorType.NETWORK_ERROR, "the origin's TLS certificate is not valid")
    if isinstance(exc, aiohttp.ClientError | ConnectionError):
        return DownloadError(ErrorType.NETWORK_ERROR, describe(exc), retryable=True)
    if isinstance(exc, OSError):
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return DownloadError(ErrorType.DISK_ERROR, "disk full")
        return DownloadError(ErrorType.DISK_ERROR, f"cannot write: {exc.strerror}")
    return None


def describe(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect to {exc.host}:{exc.port}"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the origin closed the connection"
    text = str(exc) or type(exc).__name__
    return text[:300]
