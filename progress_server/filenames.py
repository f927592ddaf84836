"""File names: refuse bad ones a user typed, sanitise the ones an origin sent.

A name given in the request must already be plain (the user can fix it); names from
Content-Disposition or the URL are repaired instead, because the user cannot fix the origin.
Either way the result is one path component inside the downloads folder.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Container
from pathlib import Path
from urllib.parse import unquote, urlsplit

from aiohttp.multipart import content_disposition_filename, parse_content_disposition

MAX_NAME_BYTES = 255
# Room for " (999)" and ".part" after the longest name we produce ourselves.
_SANITISED_BYTES = MAX_NAME_BYTES - 16
_UNSAFE = re.compile(r'[\x00-\x1f\x7f/\\:*?"<>|]')
PART_SUFFIX = ".part"
_RESERVED_SUFFIXES = (PART_SUFFIX,)
_WINDOWS_RESERVED = re.compile(r"^(con|prn|aux|nul|com\d|lpt\d)(\..*)?$", re.IGNORECASE)


def user_filename_problem(name: str) -> str | None:
    """Why a filename given in a request is refused, or None if it is a plain name."""
    if not name:
        return "filename must not be empty"
    if "\x00" in name:
        return "filename must not contain NUL"
    if "/" in name or "\\" in name:
        return "filename must be a plain name without '/' or '\\'"
    if ".." in name:
        return "filename must not contain '..'"
    if name.startswith("."):
        return "filename must not start with a dot"
    if len(name.encode()) > MAX_NAME_BYTES:
        return f"filename must be at most {MAX_NAME_BYTES} bytes"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        return "filename must not contain control characters"
    if name.endswith(_RESERVED_SUFFIXES):
        return "filename must not end in .part"
    if name.strip() != name:
        return "filename must not start or end with white space"
    return None


def sanitise(name: str) -> str:
    """Turn any string into a safe single path component ('' when nothing is left)."""
    name = unicodedata.normalize("NFC", name)
    # Only the last component of a path-like name counts: "../../etc/passwd" -> "passwd".
    name = re.split(r"[/\\]", name)[-1]
    name = _UNSAFE.sub("_", name)
    name = name.replace("..", "_")
    name = name.strip().lstrip(".").strip()
    if not any(c.isalnum() for c in name):
        # "...", "_." or "*": nothing a person would call a name; the next source decides.
        return ""
    if _WINDOWS_RESERVED.match(name):
        name = "_" + name
    for suffix in _RESERVED_SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)] + "_" + suffix[1:]
    return _truncate(name, _SANITISED_BYTES)


def _truncate(name: str, limit: int) -> str:
    if len(name.encode()) <= limit:
        return name
    stem, dot, ext = name.rpartition(".")
    if not dot or len(ext.encode()) > 16:
        stem, ext = name, ""
    keep = limit - (len(ext.encode()) + 1 if ext else 0)
    stem = stem.encode()[:keep].decode(errors="ignore")
    return f"{stem}.{ext}" if ext else stem


def from_content_disposition(header: str | None) -> str | None:
    if not header:
        return None
    try:
        _, params = parse_content_disposition(header)
        raw = content_disposition_filename(params, "filename")
    except (LookupError, ValueError):
        # An unknown charset (LookupError) or octets that do not decode in it
        # (UnicodeDecodeError, a ValueError) in `filename*=`: as good as no header. Recent
        # aiohttp already answers None for both; older releases let them out.
        return None
    return sanitise(raw) if raw else None


def from_url(url: str) -> str | None:
    path = urlsplit(url).path
    last = unquote(path.rsplit("/", 1)[-1]) if path else ""
    return sanitise(last) or None


def choose(
    requested: str | None,
    content_disposition: str | None,
    url: str,
    task_id: str,
) -> str:
    """The name a download is saved as, before collisions are resolved."""
    if requested:
        return sanitise(requested) or task_id
    return from_content_disposition(content_disposition) or from_url(url) or task_id


def unique(directory: Path, name: str, taken: Container[str]) -> str:
    """`name`, or `name (1)`, `name (2)` ... not used by another task or file on disk."""
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:
        stem, dot, ext = name, "", ""
    candidate = name
    n = 0
    while candidate in taken or _exists(directory, candidate):
        n += 1
        tail = f" ({n}){dot}{ext}"
        room = MAX_NAME_BYTES - len(tail.encode())
        if room < 1:
            stem, dot, ext = name, "", ""
            tail = f" ({n})"
            room = MAX_NAME_BYTES - len(tail.encode())
        # Shortened so that a 255-byte name's " (1)" variant is still a legal file name.
        candidate = stem.encode()[:room].decode(errors="ignore") + tail
    return candidate


def _exists(directory: Path, name: str) -> bool:
    return (directory / name).exists() or (directory / part_name(name)).exists()


def part_name(name: str) -> str:
    """The name `name` is downloaded under until complete; itself at most 255 bytes.

    A plain name may use all 255 bytes, so appending ".part" can be too long for the file
    system; such names are shortened and tagged with a hash of the full name instead.
    """
    candidate = name + PART_SUFFIX
    if len(candidate.encode()) <= MAX_NAME_BYTES:
        return candidate
    tag = hashlib.sha256(name.encode()).hexdigest()[:8]
    keep = MAX_NAME_BYTES - len(PART_SUFFIX) - len(tag) - 1
    return name.encode()[:keep].decode(errors="ignore") + "~" + tag + PART_SUFFIX


def inside(directory: Path, name: str) -> Path:
    """The path of `name` in `directory`, refusing anything that would land outside it."""
    path = (directory / name).resolve()
    if path.parent != directory.resolve():
        raise ValueError(f"{name!r} is not a plain file name")
    return path
