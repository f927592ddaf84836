"""The worker's hook reporters: what yt-dlp's hook calls become as JSON lines."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Any

from progress_server.media.reporting import EventStream, PostprocessReporter, ProgressReporter


def lines(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_merge_progress_follows_the_output_growing(tmp_path: Path) -> None:
    video, audio = tmp_path / "a.f1.mp4", tmp_path / "a.f2.m4a"
    video.write_bytes(b"v" * 3000)
    audio.write_bytes(b"a" * 1000)
    out = io.StringIO()
    reporter = PostprocessReporter(EventStream(out))
    info = {"filepath": str(tmp_path / "a.mp4"), "__files_to_merge": [str(video), str(audio)]}

    reporter({"status": "started", "postprocessor": "Merger", "info_dict": info})
    temp = tmp_path / "a.temp.mp4"
    temp.write_bytes(b"x" * 1000)
    time.sleep(0.6)
    temp.write_bytes(b"x" * 3000)
    time.sleep(0.6)
    reporter({"status": "finished", "postprocessor": "Merger", "info_dict": info})
    temp.write_bytes(b"x" * 4000)
    time.sleep(0.4)

    events = lines(out)
    assert events[0] == {"event": "postprocess", "postprocessor": "Merger", "status": "started"}
    assert events[-1] == {"event": "postprocess", "postprocessor": "Merger", "status": "finished"}
    shown = [e["percentage"] for e in events if e["status"] == "processing"]
    assert shown == [25.0, 75.0]


def test_progress_lines_name_the_part_and_are_thinned(tmp_path: Path) -> None:
    out = io.StringIO()
    reporter = ProgressReporter(EventStream(out), ["137", "140"])
    video = {"format_id": "137"}
    for n in range(100):  # a burst of chunk reads within one fragment
        reporter({"status": "downloading", "downloaded_bytes": n * 10, "total_bytes": 5000,
                  "info_dict": video, "fragment_index": 1, "fragment_count": 5})  # fmt: skip
    reporter({"status": "downloading", "downloaded_bytes": 1200, "total_bytes_estimate": 6000,
              "info_dict": video, "fragment_index": 2, "fragment_count": 5})  # fmt: skip
    # yt-dlp's "already downloaded" report carries only the size on disk.
    reporter({"status": "finished", "total_bytes": 800, "info_dict": {"format_id": "140"}})

    events = lines(out)
    assert len(events) == 3
    assert [e["part"] for e in events] == [0, 0, 1]
    assert events[1]["estimate"] == 6000 and events[1]["fragment_index"] == 2
    assert events[2]["downloaded"] == 800 and events[2]["status"] == "finished"
