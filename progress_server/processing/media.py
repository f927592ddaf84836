"""What a media file is, as read from ffprobe's JSON report."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from progress_server.models import JSON


@dataclass(frozen=True)
class MediaInfo:
    container: str
    duration: float | None
    video_codec: str | None
    audio_codec: str | None
    width: int | None
    height: int | None

    @property
    def duration_seconds(self) -> int | None:
        # Rounded half up: a 2.5 s clip reads 3, not Python's banker's 2.
        return None if self.duration is None else math.floor(self.duration + 0.5)

    @property
    def has_audio(self) -> bool:
        return self.audio_codec is not None

    def to_wire(self) -> JSON:
        return {
            "container": self.container,
            "video_codec": self.video_codec,
            "audio_codec": self.audio_codec,
            "width": self.width,
            "height": self.height,
        }


def media_info(report: Any, suffix: str = "") -> MediaInfo | None:
    """Read ffprobe's JSON report; None unless it found an audio or video stream."""
    if not isinstance(report, dict):
        return None
    fmt = report.get("format") or {}
    streams = [s for s in report.get("streams") or [] if isinstance(s, dict)]
    # Cover art in an MP3 is a one-frame "video" stream; it does not make the file a video.
    video = next(
        (
            s
            for s in streams
            if s.get("codec_type") == "video"
            and not (s.get("disposition") or {}).get("attached_pic")
        ),
        None,
    )
    audio = next((s for s in streams if s.get("codec_type") == "audio"), None)
    if video is None and audio is None:
        return None
    return MediaInfo(
        container=_container(str(fmt.get("format_name") or "unknown"), suffix),
        duration=_duration(fmt, video, audio),
        video_codec=_str(video, "codec_name"),
        audio_codec=_str(audio, "codec_name"),
        width=_int(video, "width"),
        height=_int(video, "height"),
    )


def _container(format_name: str, suffix: str) -> str:
    # ffprobe names demuxers, e.g. "mov,mp4,m4a,3gp,3g2,mj2": the file's own extension picks
    # the member people know it by when it is one of them.
    names = format_name.split(",")
    ext = suffix.lower().lstrip(".")
    return ext if ext in names else names[0]


def _duration(fmt: dict[str, Any], *streams: dict[str, Any] | None) -> float | None:
    for source in (fmt, *streams):
        value = _float(source, "duration")
        if value is not None and value > 0:
            return value
    return None


def _str(source: dict[str, Any] | None, key: str) -> str | None:
    value = source.get(key) if source else None
    return str(value) if value else None


def _int(source: dict[str, Any] | None, key: str) -> int | None:
    value = source.get(key) if source else None
    return value if isinstance(value, int) and value > 0 else None


def _float(source: dict[str, Any] | None, key: str) -> float | None:
    try:
        value = float(source[key]) if source and key in source else None
    except (TypeError, ValueError):
        return None
    return value if value is not None and math.isfinite(value) else None
