"""Reading the HTTP response headers a transfer depends on, leniently: a bad value is None."""

from __future__ import annotations

import math
import time
from email.utils import parsedate_to_datetime


def int_or_none(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def strong_etag(value: str | None) -> str | None:
    # If-Range needs a strong validator; a weak ETag would make every resume start over.
    if value and not value.startswith("W/"):
        return value
    return None


def content_range(value: str | None) -> tuple[int | None, int | None, int | None]:
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


def retry_after(value: str | None) -> float | None:
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
