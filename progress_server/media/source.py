"""Which source fetches a URL: "http" as a file, or "media" through yt-dlp; and whether it can.

"auto" picks media only where yt-dlp has a site-specific extractor for the URL (its generic
one matches every URL, so it does not count). The decision reads URL patterns only: no
request is made. yt-dlp is optional; without it everything resolves to http and a task
that asks for media is refused.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable
from typing import Literal

Source = Literal["http", "media"]
SOURCES = ("auto", "http", "media")
MISSING_MESSAGE = (
    "media sources need yt-dlp, which is not installed: pip install 'progress-server[media]'"
)
# Extractors whose patterns take any URL: matching them says nothing about the site.
_CATCH_ALL = frozenset({"Generic"})


@functools.cache
def media_available() -> bool:
    """True when yt-dlp is importable (the [media] extra is installed)."""
    return importlib.util.find_spec("yt_dlp") is not None


class MediaUnavailable(LookupError):
    """ "source": "media" without yt-dlp installed; the API answers 422."""


@functools.cache
def _site_matchers() -> tuple[Callable[[str], bool], ...]:
    from yt_dlp.extractor import gen_extractor_classes

    return tuple(ie.suitable for ie in gen_extractor_classes() if ie.ie_key() not in _CATCH_ALL)


def warm_up() -> None:
    """Load yt-dlp's extractor list and compile its patterns (a few hundred ms, once).

    Run it in a thread at start so the first "auto" request does not pay for it on the loop.
    """
    if media_available():
        has_site_extractor("http://example.invalid/")


@functools.lru_cache(maxsize=4096)
def has_site_extractor(url: str) -> bool:
    """True when one of yt-dlp's site-specific extractors claims the URL (no network)."""
    if not media_available():
        return False
    return any(suitable(url) for suitable in _site_matchers())


def resolve(requested: str, url: str) -> Source:
    """The source a task with `"source": requested` uses for `url`.

    Raises ValueError for an unknown source, and MediaUnavailable when "media" is asked
    for without yt-dlp installed (both a 422 for the API).
    """
    if requested not in SOURCES:
        raise ValueError(f"source must be one of {', '.join(SOURCES)}")
    if requested == "http":
        return "http"
    if requested == "media":
        if not media_available():
            raise MediaUnavailable(MISSING_MESSAGE)
        return "media"
    return "media" if has_site_extractor(url) else "http"


def startup_warning() -> str | None:
    """The one line the server logs at start when media sources are unavailable."""
    return None if media_available() else MISSING_MESSAGE
