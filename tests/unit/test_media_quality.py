"""The page's quality choices, as yt-dlp format selectors, picking from a typical site's
formats: separate video heights plus one audio track, and a small muxed fallback."""

from __future__ import annotations

from typing import Any

import pytest
from yt_dlp import YoutubeDL

from progress_server.media.job import DEFAULT_FORMAT, QUALITY_FORMATS


def video(format_id: str, height: int, tbr: int, acodec: str = "none") -> dict[str, Any]:
    return {
        "format_id": format_id, "url": f"https://cdn.invalid/{format_id}", "ext": "mp4",
        "vcodec": "avc1.64001f", "acodec": acodec, "height": height,
        "width": height * 16 // 9, "tbr": tbr,
    }  # fmt: skip


FORMATS = [
    video("480-muxed", 480, 900, acodec="mp4a.40.2"),
    video("720", 720, 2500),
    video("1080", 1080, 5000),
    video("2160", 2160, 16000),
    {"format_id": "audio", "url": "https://cdn.invalid/a", "ext": "m4a", "vcodec": "none",
     "acodec": "mp4a.40.2", "abr": 128, "tbr": 128},
]  # fmt: skip


def chosen(selector: str, formats: list[dict[str, Any]]) -> str:
    info = {"id": "v", "title": "V", "formats": [dict(f) for f in formats]}
    params = {"format": selector, "quiet": True, "cachedir": False, "simulate": True}
    with YoutubeDL(params) as ydl:
        return str(ydl.process_ie_result(info, download=False)["format_id"])


@pytest.mark.parametrize(
    ("choice", "expected"),
    [("best", "2160+audio"), ("1080p", "1080+audio"), ("720p", "720+audio"), ("audio", "audio")],
)
def test_each_choice_takes_the_best_it_allows(choice: str, expected: str) -> None:
    assert chosen(QUALITY_FORMATS[choice], FORMATS) == expected


def test_sites_with_only_muxed_files_still_get_one() -> None:
    muxed_only = [
        video("360-muxed", 360, 600, "mp4a.40.2"),
        video("1080-muxed", 1080, 5000, "mp4a"),
    ]
    assert chosen(QUALITY_FORMATS["720p"], muxed_only) == "360-muxed"
    assert chosen(QUALITY_FORMATS["audio"], muxed_only) == "1080-muxed"
    assert QUALITY_FORMATS["best"] == DEFAULT_FORMAT
