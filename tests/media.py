"""Real media made at test time with ffmpeg's lavfi test sources, and ffprobe to check it.

Small and fast on purpose: MPEG-4 Part 2 and MP3 encode far quicker than H.264, so even the
60-second clip used to catch a transcode in the act takes a couple of seconds to make.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

HAVE_FFMPEG = shutil.which("ffmpeg") is not None and shutil.which("ffprobe") is not None


def _ffmpeg(*args: str) -> None:
    cmd = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y", *args]
    subprocess.run(cmd, check=True, timeout=120)


def make_video(
    path: Path, seconds: int = 3, size: str = "320x240", rate: int = 15, audio: bool = True
) -> Path:
    """A test-pattern video (MPEG-4 Part 2) with a sine tone (MP3), in the container the
    file name's extension implies (.mkv, .avi, .mp4)."""
    args = ["-f", "lavfi", "-i", f"testsrc=duration={seconds}:size={size}:rate={rate}"]
    if audio:
        args += ["-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}"]
        args += ["-c:a", "libmp3lame", "-b:a", "64k"]
    args += ["-c:v", "mpeg4", "-q:v", "10", "-t", str(seconds), str(path)]
    _ffmpeg(*args)
    return path


def make_audio(path: Path, seconds: int = 2) -> Path:
    """A sine tone, FLAC-encoded (lossless, so a transcode has real work to do)."""
    _ffmpeg(
        "-f", "lavfi", "-i", f"sine=frequency=660:duration={seconds}", "-c:a", "flac", str(path)
    )
    return path


def make_song_with_cover(path: Path, seconds: int = 2) -> Path:
    """An MP3 with cover art: a one-picture "video" stream that is not a video."""
    _ffmpeg(
        *("-f", "lavfi", "-i", f"sine=frequency=550:duration={seconds}"),
        *("-f", "lavfi", "-i", "testsrc=size=64x64:duration=1", "-frames:v", "1"),
        *("-map", "0:a", "-map", "1:v", "-c:a", "libmp3lame", "-c:v", "png"),
        *("-disposition:v", "attached_pic", "-id3v2_version", "3", str(path)),
    )
    return path


def make_corrupt(path: Path) -> Path:
    """An .mp4 cut off after its first kilobytes: the name of media, not the content."""
    whole = make_video(path.with_name("whole-" + path.name), seconds=2)
    path.write_bytes(whole.read_bytes()[:4096])
    whole.unlink()
    return path


def library(folder: Path) -> Path:
    """The standard test media in `folder`, made once (later calls reuse the files):
    clip.mkv (3 s video with audio), silent.mkv (2 s, no audio), tone.flac (2 s audio),
    song.mp3 (2 s, with cover art), broken.mp4 (corrupt), long.mkv (60 s, 640x360: a
    transcode that takes a while)."""
    folder.mkdir(parents=True, exist_ok=True)
    wanted: dict[str, Callable[[Path], Path]] = {
        "clip.mkv": lambda p: make_video(p, seconds=3),
        "silent.mkv": lambda p: make_video(p, seconds=2, audio=False),
        "tone.flac": lambda p: make_audio(p, seconds=2),
        "song.mp3": make_song_with_cover,
        "broken.mp4": make_corrupt,
        "long.mkv": lambda p: make_video(p, seconds=60, size="640x360", rate=25),
    }
    for name, make in wanted.items():
        if not (folder / name).exists():
            # Made under a temporary name, so a half-made file is never taken for a whole one.
            made = make(folder / f"making-{name}")
            made.rename(folder / name)
    return folder


def probe(path: Path) -> dict[str, Any]:
    """ffprobe's report: {"format": {...}, "streams": [...]}."""
    out = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-print_format",
            "json",
            "-show_format",
            "-show_streams",
            str(path),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    ).stdout
    report: dict[str, Any] = json.loads(out)
    return report


def codecs(path: Path) -> dict[str, str]:
    """{"video": codec, "audio": codec} of the file's streams (cover art aside)."""
    found: dict[str, str] = {}
    for stream in probe(path)["streams"]:
        if (stream.get("disposition") or {}).get("attached_pic"):
            continue
        found.setdefault(stream["codec_type"], stream["codec_name"])
    return found


def duration(path: Path) -> float:
    return float(probe(path)["format"]["duration"])


def processes_mentioning(text: str, name: str = "ffmpeg") -> list[int]:
    """PIDs of live `name` processes whose command line contains `text` (from /proc)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            status = (entry / "stat").read_text()
        except OSError:
            continue
        # A zombie has been killed already; it only waits to be reaped.
        if ") Z " in status:
            continue
        if any(os.path.basename(a.decode(errors="replace")) == name for a in argv[:5]) and any(
            text in a.decode(errors="replace") for a in argv
        ):
            pids.append(int(entry.name))
    return pids
