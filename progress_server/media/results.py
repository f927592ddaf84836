"""What a media worker found and produced, as typed values built from its JSON lines."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from progress_server.media.progress import PartSize


def _int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int(value)


def _float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


@dataclass(frozen=True)
class MediaPart:
    """One requested format (video, audio, or both in one file)."""

    format_id: str
    ext: str | None
    size: int | None
    tbr: float | None

    @property
    def expected(self) -> PartSize:
        return PartSize(self.size, self.tbr)


@dataclass(frozen=True)
class ExtractedMedia:
    """One video, extracted and about to download."""

    title: str | None
    duration_seconds: float | None
    extractor: str | None
    webpage_url: str | None
    # The name the worker gives the file: the title sanitised, with yt-dlp's extension.
    filename: str
    parts: tuple[MediaPart, ...]

    @classmethod
    def from_event(cls, event: dict[str, Any]) -> ExtractedMedia:
        parts = tuple(
            MediaPart(
                str(p.get("format_id") or ""),
                _str(p.get("ext")),
                _int(p.get("size")),
                _float(p.get("tbr")),
            )
            for p in event.get("parts") or []
            if isinstance(p, dict)
        )
        return cls(
            title=_str(event.get("title")),
            duration_seconds=_float(event.get("duration")),
            extractor=_str(event.get("extractor")),
            webpage_url=_str(event.get("webpage_url")),
            filename=str(event.get("filename") or "media"),
            parts=parts,
        )


@dataclass(frozen=True)
class PlaylistEntry:
    index: int
    title: str | None
    duration_seconds: float | None
    # The entry's own URL when the site gives one (e.g. a video page); None when the entry
    # only exists as item `index` of the playlist's URL (a page's second <video>).
    url: str | None


@dataclass(frozen=True)
class MediaPlaylist:
    """A URL that holds several media: each entry is meant to become a task of its own."""

    title: str | None
    webpage_url: str | None
    entries: tuple[PlaylistEntry, ...]

    @classmethod
    def from_event(cls, event: dict[str, Any]) -> MediaPlaylist:
        entries = []
        for position, raw in enumerate(event.get("entries") or [], start=1):
            if not isinstance(raw, dict):
                continue
            entries.append(
                PlaylistEntry(
                    index=_int(raw.get("index")) or position,
                    title=_str(raw.get("title")),
                    duration_seconds=_float(raw.get("duration")),
                    url=_str(raw.get("url")),
                )
            )
        return cls(_str(event.get("title")), _str(event.get("webpage_url")), tuple(entries))


@dataclass(frozen=True)
class MediaFile:
    """The finished file, still in the job's output folder."""

    path: Path
    size: int
    title: str | None
    duration_seconds: float | None

    @classmethod
    def from_event(cls, event: dict[str, Any]) -> MediaFile:
        path = Path(str(event.get("filepath")))
        return cls(
            path=path,
            size=_int(event.get("size")) or (path.stat().st_size if path.exists() else 0),
            title=_str(event.get("title")),
            duration_seconds=_float(event.get("duration")),
        )
