"""MediaError, and how the worker turns what yt-dlp raised into one of the contract's types.

yt-dlp wraps failures several layers deep (a DownloadError around an ExtractorError around
a TransportError around an OSError), so the cause chain is walked for the most telling one.
yt-dlp is imported only inside `classify`, which runs in the worker: the parent side of this
module works without the extra installed.
"""

from __future__ import annotations

import errno
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from progress_server.netpolicy import PolicyViolation

# The contract's error types a media task can end with.
EXTRACT_ERROR = "extract_error"
NETWORK_ERROR = "network_error"
HTTP_ERROR = "http_error"
TIMEOUT = "timeout"
DISK_ERROR = "disk_error"
INVALID_URL = "invalid_url"
PROCESSING_ERROR = "processing_error"
INTERNAL_ERROR = "internal_error"

RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})
_ERROR_PREFIX = re.compile(r"^(ERROR:\s*)+")
_URL = re.compile(r"\b(?:https?|wss?)://[^\s'\"<>()]+")
MAX_MESSAGE = 500


@dataclass
class MediaError(Exception):
    error_type: str
    message: str
    retryable: bool = False
    status: int | None = None

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def to_event(self) -> dict[str, Any]:
        return {
            "event": "error",
            "type": self.error_type,
            "message": self.message,
            "retryable": self.retryable,
            "status": self.status,
        }

    @classmethod
    def from_event(cls, event: dict[str, Any]) -> MediaError:
        status = event.get("status")
        return cls(
            str(event.get("type") or INTERNAL_ERROR),
            str(event.get("message") or "the media worker failed"),
            retryable=bool(event.get("retryable")),
            status=status if isinstance(status, int) else None,
        )


def clean_message(text: str) -> str:
    """yt-dlp's message without its "ERROR:" prefix and bug-report boilerplate, and with
    every URL in it cut to scheme, host and path: messages reach the logs, and a query
    string or user:password there may be a key."""
    text = _ERROR_PREFIX.sub("", str(text).strip())
    text = text.split("; please report this issue on", 1)[0]
    text = text.split(" please report this issue on", 1)[0]
    text = _URL.sub(lambda m: _redacted(m.group(0)), text)
    return text.strip()[:MAX_MESSAGE] or "unknown error"


def _redacted(url: str) -> str:
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return url.split("?", 1)[0].split("#", 1)[0]
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}{port}{parts.path}"


def causes(exc: BaseException) -> Iterator[BaseException]:
    """`exc` and everything it wraps: exc_info, cause, unexpected_errors, __cause__, __context__."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        current = todo.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        exc_info = getattr(current, "exc_info", None)
        if isinstance(exc_info, tuple) and len(exc_info) > 1:
            if isinstance(exc_info[1], BaseException):
                todo.append(exc_info[1])
        for attr in ("cause", "__cause__", "__context__"):
            inner = getattr(current, attr, None)
            if isinstance(inner, BaseException):
                todo.append(inner)
        for inner in getattr(current, "unexpected_errors", None) or ():
            if isinstance(inner, BaseException):
                todo.append(inner)


def classify(exc: BaseException, *, extracting: bool) -> MediaError:
    """The contract's view of a failure raised by yt-dlp while extracting or downloading."""
    from yt_dlp.networking.exceptions import HTTPError, TransportError
    from yt_dlp.utils import (
        ContentTooShortError,
        ExtractorError,
        PostProcessingError,
        UnsupportedError,
    )

    chain = list(causes(exc))
    for inner in chain:
        if isinstance(inner, PolicyViolation):
            return MediaError(INVALID_URL, str(inner))
    for inner in chain:
        if isinstance(inner, HTTPError):
            status = inner.status
            text = f"HTTP {status} {inner.reason or ''}".strip()
            return MediaError(HTTP_ERROR, text, status in RETRYABLE_STATUS, status)
    for inner in chain:
        if isinstance(inner, TimeoutError) or "timed out" in str(inner).lower():
            return MediaError(TIMEOUT, clean_message(str(inner)), retryable=True)
    for inner in chain:
        if isinstance(inner, TransportError | ContentTooShortError | ConnectionError):
            return MediaError(NETWORK_ERROR, clean_message(str(inner)), retryable=True)
    for inner in chain:
        if isinstance(inner, OSError) and inner.errno in _DISK_ERRNOS:
            return MediaError(DISK_ERROR, clean_message(str(inner)))
    for inner in chain:
        if isinstance(inner, PostProcessingError):
            return MediaError(PROCESSING_ERROR, clean_message(inner.msg or str(inner)))
    for inner in chain:
        if isinstance(inner, UnsupportedError | ExtractorError):
            return MediaError(EXTRACT_ERROR, clean_message(inner.orig_msg))
    if extracting:
        return MediaError(EXTRACT_ERROR, clean_message(str(exc)))
    # A downloader that gave up (e.g. "fragment 3 not found, unable to continue") after its
    # own retries: network trouble that another run, resuming, may get past.
    if type(exc).__name__ == "DownloadError":
        return MediaError(NETWORK_ERROR, clean_message(str(exc)), retryable=True)
    return MediaError(INTERNAL_ERROR, clean_message(f"{type(exc).__name__}: {exc}"))
