"""MediaJob: what one media worker run is asked to do, as the JSON the worker reads on stdin."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from progress_server.settings import Settings

# Best video with best audio (merged), else the best single file that has both.
DEFAULT_FORMAT = "bv*+ba/b"

# The page's quality choice, as yt-dlp format selectors. Each falls back to the best single
# file under the same limit, so a site that only offers muxed formats still works.
QUALITY_FORMATS = {
    "best": DEFAULT_FORMAT,
    "1080p": "bv*[height<=1080]+ba/b[height<=1080]/b",
    "720p": "bv*[height<=720]+ba/b[height<=720]/b",
    "audio": "ba/b",
}


@dataclass(frozen=True)
class MediaJob:
    url: str
    # The worker's own folder for this task: yt-dlp's .part, .ytdl and fragment files live
    # here between runs, which is what lets a later run resume them.
    output_dir: Path
    format: str = DEFAULT_FORMAT
    # Bytes per second (yt-dlp's `ratelimit`); None for no limit.
    ratelimit: int | None = None
    # False: only the item the URL points at, even when the page holds several.
    playlist: bool = True
    # 1-based: download this one item of the URL's playlist (a playlist entry's own task).
    playlist_index: int | None = None
    # Names the file instead of the extracted title (a playlist entry keeps its list's title).
    title: str | None = None
    deny_private: bool = False
    allow_networks: tuple[str, ...] = ()
    loopback_only: bool = False
    socket_timeout: float = 20.0
    # yt-dlp's own retries inside one run; the parent retries whole runs on top of these.
    retries: int = 3
    fragment_retries: int = 5

    def to_json(self) -> str:
        data = asdict(self)
        data["output_dir"] = str(self.output_dir)
        data["allow_networks"] = list(self.allow_networks)
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> MediaJob:
        data = json.loads(text)
        if not isinstance(data, dict) or not isinstance(data.get("url"), str):
            raise ValueError("a media job is a JSON object with a string 'url'")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown media job fields: {', '.join(unknown)}")
        data["output_dir"] = Path(data["output_dir"])
        data["allow_networks"] = tuple(data.get("allow_networks") or ())
        return cls(**data)

    @classmethod
    def for_settings(
        cls, settings: Settings, url: str, output_dir: Path, **options: Any
    ) -> MediaJob:
        """A job under the server's network policy and timeouts; `options` set the rest."""
        return cls(
            url=url,
            output_dir=output_dir,
            deny_private=settings.deny_private_networks,
            allow_networks=tuple(settings.allow_networks),
            loopback_only=settings.loopback_only,
            socket_timeout=max(settings.connect_timeout, settings.read_timeout),
            **options,
        )
