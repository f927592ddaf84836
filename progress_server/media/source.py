"""Which source fetches a URL: "http" as a file, or "media" through yt-dlp; and whether it can.

"auto" picks media where yt-dlp has a site-specific extractor for the URL (its generic one
matches every URL, so it does not count), and for a URL whose path ends in `.m3u8` or `.mpd`:
a streaming manifest is never what a user wants as a file. A format selector given with
"auto" asks for media too (only yt-dlp reads one). The decision reads URL patterns only: no
request is made. yt-dlp is optional; without it everything resolves to http and a task
that asks for media is refused.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import re
import threading
from collections.abc import Callable
from typing import Any, Literal
from urllib.parse import urlsplit

from progress_server.errors import Invalid

Source = Literal["http", "media"]
SOURCES = ("auto", "http", "media")
MISSING_MESSAGE = (
    "media sources need yt-dlp, which is not installed: pip install 'progress-server[media]'"
)
# Path endings of HLS and DASH manifests: media under "auto" whatever the site.
MANIFEST_SUFFIXES = (".m3u8", ".mpd")
MAX_FORMAT_LENGTH = 500
# Extractors whose patterns take any URL: matching them says nothing about the site.
_CATCH_ALL = frozenset({"Generic"})
_BASES = frozenset({"InfoExtractor", "LazyLoadExtractor"})
_LEADING_FLAGS = re.compile(r"^\(\?([aiLmsux]+)\)")
# Numbered back-references cannot be renamed; such patterns are matched on their own.
_NUMBERED_REFERENCE = re.compile(r"\\[1-9]|\(\?\(\d")
_BUILDING = threading.Lock()


@functools.cache
def media_available() -> bool:
    """True when yt-dlp is importable (the [media] extra is installed)."""
    return importlib.util.find_spec("yt_dlp") is not None


class MediaUnavailable(LookupError):
    """ "source": "media" without yt-dlp installed; the API answers 422."""


def _declared_in(cls: type, name: str) -> str:
    return next(k.__name__ for k in cls.__mro__ if name in k.__dict__)


def _scoped(pattern: str, prefix: str) -> str:
    """One extractor's pattern made safe inside a larger alternation: its group names get
    a prefix of their own, and leading global flags apply to it alone."""
    renamed = re.sub(r"\(\?P<(\w+)>", lambda m: f"(?P<{prefix}{m.group(1)}>", pattern)
    renamed = re.sub(r"\(\?P=(\w+)\)", lambda m: f"(?P={prefix}{m.group(1)})", renamed)
    renamed = re.sub(r"\(\?\((\w+)\)", lambda m: f"(?({prefix}{m.group(1)})", renamed)
    flags = _LEADING_FLAGS.match(renamed)
    if flags:
        renamed = f"(?{flags.group(1)}:{renamed[flags.end() :]})"
    re.compile(renamed)
    return f"(?:{renamed})"


@functools.cache
def _site_matchers() -> tuple[Callable[[str], Any], ...]:
    """Matchers that together say what yt-dlp's site extractors' `suitable` say.

    Most extractors only match their `_VALID_URL`; those patterns are joined into one
    alternation, a single C-level match (about 4x faster than 1700 Python calls). The
    few that decide otherwise, or whose pattern cannot be joined, are asked one by one.
    """
    from yt_dlp.extractor import gen_extractor_classes

    joined: list[str] = []
    separate: list[Callable[[str], Any]] = []
    for n, ie in enumerate(gen_extractor_classes()):
        if ie.ie_key() in _CATCH_ALL:
            continue
        plain = _declared_in(ie, "suitable") in _BASES
        plain = plain and _declared_in(ie, "_match_valid_url") in _BASES
        patterns = ie._VALID_URL
        if not plain:
            separate.append(ie.suitable)
            continue
        if not patterns:
            continue
        for m, pattern in enumerate(patterns if isinstance(patterns, list | tuple) else [patterns]):
            try:
                if _NUMBERED_REFERENCE.search(pattern):
                    raise re.error("numbered reference")
                joined.append(_scoped(pattern, f"e{n}_{m}_"))
            except re.error:
                separate.append(re.compile(pattern).match)
    return (re.compile("|".join(joined)).match, *separate) if joined else tuple(separate)


def warm_up() -> None:
    """Load yt-dlp's extractor list and compile its patterns (about a second, once).

    Run it in a thread at start so the first "auto" request does not pay for it on the loop.
    """
    if media_available():
        has_site_extractor("http://example.invalid/")
        _format_checker()


@functools.lru_cache(maxsize=4096)
def has_site_extractor(url: str) -> bool:
    """True when one of yt-dlp's site-specific extractors claims the URL (no network)."""
    if not media_available():
        return False
    # functools.cache does not hold back a second caller while the first one builds: a
    # burst of submissions right after a start had every executor thread compile the
    # patterns at once, holding the loop for seconds.
    with _BUILDING:
        matchers = _site_matchers()
    return any(_claims(match, url) for match in matchers)


def _claims(match: Callable[[str], Any], url: str) -> bool:
    try:
        return bool(match(url))
    # An extractor's own check (third-party code) failing on an odd URL claims nothing.
    except Exception:
        return False


def is_manifest(url: str) -> bool:
    """True for a URL whose path names an HLS (.m3u8) or DASH (.mpd) manifest."""
    try:
        path = urlsplit(url).path
    except ValueError:
        return False
    return path.lower().endswith(MANIFEST_SUFFIXES)


def resolve(requested: str, url: str, format_given: bool = False) -> Source:
    """The source a task with `"source": requested` uses for `url`.

    Raises ValueError for an unknown source, and MediaUnavailable when "media" is asked
    for (or a format given) without yt-dlp installed (both a 422 for the API).
    """
    if requested not in SOURCES:
        raise ValueError(f"source must be one of {', '.join(SOURCES)}")
    if requested == "http":
        return "http"
    if requested == "media" or format_given:
        if not media_available():
            raise MediaUnavailable(MISSING_MESSAGE)
        return "media"
    if not media_available():
        return "http"
    return "media" if is_manifest(url) or has_site_extractor(url) else "http"


async def choose_source(requested: str, url: str, selector: str | None = None) -> Source:
    """`resolve`, with yt-dlp's work in a thread: its pattern matching (the first call loads
    and compiles the patterns, about a second; later ones take well under a millisecond)
    and the check of a format selector. Invalid (a 422) for one yt-dlp cannot read."""
    if selector is not None:
        problem = await asyncio.to_thread(format_problem, selector)
        if problem:
            raise Invalid(problem)
    if requested == "auto" and selector is None and media_available():
        return await asyncio.to_thread(resolve, requested, url)
    return resolve(requested, url, selector is not None)


@functools.cache
def _format_checker() -> Callable[[str], object]:
    from yt_dlp import YoutubeDL

    # Only its selector parser is used: no request, no file, no cache directory.
    ydl = YoutubeDL({"quiet": True, "no_warnings": True, "cachedir": False})
    return ydl.build_format_selector  # type: ignore[no-any-return]


def format_shape_problem(selector: str) -> str | None:
    """What is wrong with a format selector before yt-dlp reads it (cheap, no yt-dlp)."""
    if not selector.strip() or len(selector) > MAX_FORMAT_LENGTH:
        return f"'format' must be a yt-dlp format selector of 1 to {MAX_FORMAT_LENGTH} characters"
    if any(ord(c) < 32 for c in selector):
        return "'format' must not contain control characters"
    return None


@functools.lru_cache(maxsize=256)
def format_problem(selector: str) -> str | None:
    """Why yt-dlp cannot read this format selector, or None when it can."""
    shape = format_shape_problem(selector)
    if shape:
        return shape
    if not media_available():
        return MISSING_MESSAGE
    try:
        _format_checker()(selector)
    # yt-dlp's parser raises SyntaxError for most bad selectors but TypeError, ValueError
    # and others for some (found by fuzzing): whatever it raises, it cannot read this one.
    except Exception as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return f"'format' is not a yt-dlp format selector: {reason}"
    return None


def startup_warning() -> str | None:
    """The one line the server logs at start when media sources are unavailable."""
    return None if media_available() else MISSING_MESSAGE
