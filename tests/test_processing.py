"""Post-processing with real ffmpeg: probing, transcoding with progress, cancel, failures.

Media is generated at test time (tests/media.py), served by a real origin from its
`/media/{name}` route, and downloaded by an in-process server over real HTTP.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.apiclient import Api, assert_error, eventually
from tests.conftest import MakeApi
from tests.media import (
    HAVE_FFMPEG,
    codecs,
    duration,
    processes_mentioning,
)
from tests.origins import Origin

pytestmark = pytest.mark.skipif(not HAVE_FFMPEG, reason="needs ffmpeg and ffprobe on PATH")


def downloads(api: Api) -> Path:
    return api.settings.downloads_dir


async def wait_ffmpeg(api: Api, within: float = 60) -> None:
    """Until this server's ffmpeg is running and has written some output."""
    where = str(downloads(api))

    async def transcoding() -> bool:
        scratch = [p for p in downloads(api).glob(".*.transcode.*") if p.stat().st_size > 0]
        return bool(processes_mentioning(where)) and bool(scratch)

    await eventually(transcoding, within, lambda: "ffmpeg never started writing")


# -- probe ------------------------------------------------------------------------------


async def test_video_result_has_its_real_duration_and_media_details(
    api: Api, media_origin: Origin
) -> None:
    task = await api.submit(media_origin.url("/media/clip.mkv"))
    done = await api.wait_for(task["task_id"], "completed")
    assert done["filename"] == "clip.mkv"
    assert done["result"]["filename"] == "clip.mkv"
    assert done["result"]["duration_seconds"] == 3
    assert done["result"]["media"] == {
        "container": "matroska",
        "video_codec": "mpeg4",
        "audio_codec": "mp3",
        "width": 320,
        "height": 240,
    }
    names = [e["event"] for e in await api.events(task["task_id"])]
    assert names.index("download.processing") < names.index("download.completed")


async def test_audio_result_has_its_duration_and_no_picture(api: Api, media_origin: Origin) -> None:
    task = await api.submit(media_origin.url("/media/tone.flac"))
    done = await api.wait_for(task["task_id"], "completed")
    assert done["result"]["duration_seconds"] == 2
    assert done["result"]["media"] == {
        "container": "flac",
        "video_codec": None,
        "audio_codec": "flac",
        "width": None,
        "height": None,
    }


async def test_cover_art_does_not_make_a_song_a_video(api: Api, media_origin: Origin) -> None:
    task = await api.submit(media_origin.url("/media/song.mp3"))
    done = await api.wait_for(task["task_id"], "completed")
    assert done["result"]["duration_seconds"] == 2
    assert done["result"]["media"]["audio_codec"] == "mp3"
    assert done["result"]["media"]["video_codec"] is None


async def test_file_that_only_looks_like_media_has_null_duration(
    api: Api, media_origin: Origin
) -> None:
    task = await api.submit(media_origin.url("/media/broken.mp4"))
    done = await api.wait_for(task["task_id"], "completed")
    assert done["result"] == {"filename": "broken.mp4", "size_mb": 0.0, "duration_seconds": None}


async def test_media_under_a_plain_name_is_still_probed(
    api: Api, media_origin: Origin, media_dir: Path
) -> None:
    # The probe is skipped for files that are plainly not media (by name and leading bytes);
    # a video served as "clip.bin" must still be recognised by its bytes.
    disguised = media_dir / "disguised.bin"
    if not disguised.exists():
        disguised.write_bytes((media_dir / "clip.mkv").read_bytes())
    task = await api.submit(media_origin.url("/media/disguised.bin"))
    done = await api.wait_for(task["task_id"], "completed")
    assert done["result"]["duration_seconds"] == 3
    assert done["result"]["media"]["video_codec"] is not None


async def test_plain_bytes_get_the_guides_three_result_fields(api: Api, origin: Origin) -> None:
    task = await api.submit(origin.url("/file/data.bin", size=300_000))
    done = await api.wait_for(task["task_id"], "completed")
    assert done["result"] == {"filename": "data.bin", "size_mb": 0.29, "duration_seconds": None}


# -- transcode --------------------------------------------------------------------------


async def test_mp3_transcode_reports_progress_and_describes_the_produced_file(
    api: Api, media_origin: Origin
) -> None:
    seen: list[dict[str, Any]] = []
    async with api.client.ws_connect("/api/progress/ws", headers=api.auth()) as ws:
        await ws.send_json({"action": "subscribe", "task_id": "*"})
        task = await api.submit(
            media_origin.url("/media/clip.mkv"), post_process={"transcode": "mp3"}
        )
        async with asyncio.timeout(60):
            async for message in ws:
                event = json.loads(message.data)
                if event.get("task_id") != task["task_id"]:
                    continue
                seen.append(event)
                if event["event"] in ("download.completed", "download.error"):
                    break
    names = [e["event"] for e in seen]
    completed = seen[-1]
    assert completed["event"] == "download.completed", seen

    # Download progress first, then processing, then processing progress rising to 100.
    last_download = max(i for i, n in enumerate(names) if n == "download.progress")
    entered = names.index("download.processing")
    assert seen[last_download]["progress"]["percentage"] == 100.0
    assert last_download < entered
    steps = [e["processing"] for e in seen[entered:] if "processing" in e]
    assert steps, seen
    assert {s["step"] for s in steps} == {"transcode"}
    percentages = [s["percentage"] for s in steps]
    assert percentages == sorted(percentages)
    assert percentages[-1] == 100.0 and steps[-1]["eta_seconds"] == 0
    assert all(0 <= p <= 100 for p in percentages)
    assert seen[-2]["event"] == "download.processing"

    # The result and the record describe the MP3, not the download.
    produced = downloads(api) / "clip.mp3"
    result = completed["result"]
    assert result["filename"] == "clip.mp3"
    assert result["size_mb"] == round(produced.stat().st_size / 2**20, 2)
    assert result["duration_seconds"] == round(duration(produced)) == 3
    assert result["media"]["audio_codec"] == "mp3" and result["media"]["video_codec"] is None
    assert result["transcode"] == {"preset": "mp3", "source_filename": "clip.mkv"}
    assert codecs(produced) == {"audio": "mp3"}
    record = await api.task(task["task_id"])
    assert record["filename"] == "clip.mp3" and record["result"] == result
    # The original stays beside it; nothing half-written is left behind.
    assert (downloads(api) / "clip.mkv").is_file()
    assert sorted(p.name for p in downloads(api).iterdir()) == ["clip.mkv", "clip.mp3"]
    resp = await api.call("GET", f"/api/downloads/{task['task_id']}/file")
    assert resp.status == 200
    assert await resp.read() == produced.read_bytes()


async def test_transcode_progress_rises_live_to_100_while_other_downloads_go_on(
    make_api: MakeApi, media_origin: Origin
) -> None:
    api = await make_api(max_concurrent=1)
    reports: list[dict[str, Any]] = []
    async with api.client.ws_connect("/api/progress/ws", headers=api.auth()) as ws:
        await ws.send_json({"action": "subscribe", "task_id": "*"})
        slow = await api.submit(
            media_origin.url("/media/long.mkv"), post_process={"transcode": "mp4"}
        )
        await wait_ffmpeg(api)
        # A long transcode neither holds a download slot nor delays the next task's
        # completion (probing does not queue behind transcodes).
        quick = await api.submit(media_origin.url("/media/tone.flac"))
        await api.wait_for(quick["task_id"], "completed")
        assert (await api.task(slow["task_id"]))["state"] == "processing"

        async with asyncio.timeout(180):
            async for message in ws:
                event = json.loads(message.data)
                if event.get("task_id") != slow["task_id"]:
                    continue
                if "processing" in event:
                    at = datetime.fromisoformat(event["timestamp"]).timestamp()
                    reports.append({**event["processing"], "at": at})
                if event["event"] in ("download.completed", "download.error"):
                    assert event["event"] == "download.completed", event
                    break
    percentages = [r["percentage"] for r in reports]
    assert percentages == sorted(percentages), percentages
    assert percentages[0] == 0.0 and percentages[-1] == 100.0
    # A transcode of a minute of 640x360 H.264 takes seconds: there is progress in between.
    assert len([p for p in percentages if 0 < p < 100]) >= 2, percentages
    assert all(isinstance(r["eta_seconds"], int) for r in reports[1:]), reports
    assert reports[-1]["eta_seconds"] == 0
    # Throttled like download progress (--progress-interval 0.25 s), by the server's clock.
    span = reports[-1]["at"] - reports[0]["at"]
    assert len(reports) <= span / 0.25 + 3, (span, len(reports))
    # Live only: the history keeps the lifecycle, not every tick.
    stored = [e for e in await api.events(slow["task_id"]) if "processing" in e]
    assert stored == []


async def test_mp4_transcode_makes_h264_and_aac(api: Api, media_origin: Origin) -> None:
    # A name ffmpeg could misread (an option's dash, a URL's '#' and '%') is just a name.
    task = await api.submit(
        media_origin.url("/media/clip.mkv"),
        filename="-my clip #1 100%.mkv",
        post_process={"transcode": "mp4"},
    )
    done = await api.wait_for(task["task_id"], "completed")
    produced = downloads(api) / "-my clip #1 100%.mp4"
    assert done["filename"] == done["result"]["filename"] == produced.name
    assert codecs(produced) == {"video": "h264", "audio": "aac"}
    assert done["result"]["duration_seconds"] == 3
    assert done["result"]["media"]["container"] == "mp4"


async def test_remux_copies_streams_and_picks_a_free_name(api: Api, media_origin: Origin) -> None:
    # Another task already holds "clip.mp4": the remux must not take or overwrite it.
    first = await api.submit(media_origin.url("/media/clip.mkv"), filename="clip.mp4")
    await api.wait_for(first["task_id"], "completed")
    before = (downloads(api) / "clip.mp4").read_bytes()
    task = await api.submit(
        media_origin.url("/media/clip.mkv"), post_process={"transcode": "remux-mp4"}
    )
    done = await api.wait_for(task["task_id"], "completed")
    assert done["filename"] == "clip (1).mp4"
    assert codecs(downloads(api) / "clip (1).mp4") == {"video": "mpeg4", "audio": "mp3"}
    assert (downloads(api) / "clip.mp4").read_bytes() == before


async def test_delete_with_file_removes_the_output_and_the_original(
    api: Api, media_origin: Origin
) -> None:
    task = await api.submit(media_origin.url("/media/tone.flac"), post_process={"transcode": "mp3"})
    await api.wait_for(task["task_id"], "completed")
    assert {p.name for p in downloads(api).iterdir()} == {"tone.flac", "tone.mp3"}
    resp = await api.call("DELETE", f"/api/downloads/{task['task_id']}?delete_file=true")
    assert resp.status == 204
    assert list(downloads(api).iterdir()) == []


# -- failures ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "preset", "says"),
    [
        ("silent.mkv", "mp3", "needs an audio stream"),
        ("broken.mp4", "mp4", "not a media file"),
    ],
)
async def test_transcode_that_cannot_work_fails_and_keeps_the_download(
    api: Api, media_origin: Origin, name: str, preset: str, says: str
) -> None:
    task = await api.submit(media_origin.url(f"/media/{name}"), post_process={"transcode": preset})
    failed = await api.wait_for(task["task_id"], "failed")
    assert failed["error"]["type"] == "processing_error"
    assert says in failed["error"]["message"]
    assert [p.name for p in downloads(api).iterdir()] == [name]


@pytest.mark.parametrize(
    ("post_process", "says"),
    [
        ({"transcode": "flac"}, "unknown transcode preset 'flac'"),
        ({"transcode": 3}, "must be a preset name"),
        ({"transcod": "mp3"}, "unknown post_process option"),
        ("mp3", "must be an object"),
    ],
)
async def test_bad_post_process_is_refused_and_stores_nothing(
    api: Api, post_process: object, says: str
) -> None:
    body = {"url": "http://127.0.0.1:9/x.mkv", "post_process": post_process}
    resp = await api.call("POST", "/api/downloads", json=body)
    assert resp.status == 422
    error = await resp.json()
    assert_error(error, "validation_error")
    assert says in error["error"]["message"]
    assert await api.tasks() == []


# -- cancel and concurrency -------------------------------------------------------------


async def test_cancel_mid_transcode_stops_ffmpeg_and_removes_its_output(
    api: Api, media_origin: Origin
) -> None:
    task = await api.submit(media_origin.url("/media/long.mkv"), post_process={"transcode": "mp4"})
    await wait_ffmpeg(api)
    assert (await api.task(task["task_id"]))["state"] == "processing"

    started = time.monotonic()
    cancelled = await api.json("POST", f"/api/downloads/{task['task_id']}/cancel")
    took = time.monotonic() - started
    # The answer comes once ffmpeg has been killed and reaped: nothing is left to wait for.
    assert cancelled["state"] == "cancelled"
    assert processes_mentioning(str(downloads(api))) == [], f"ffmpeg alive {took:.2f}s after"
    assert [p.name for p in downloads(api).iterdir()] == ["long.mkv"]
    names = [e["event"] for e in await api.events(task["task_id"])]
    assert names[-1] == "download.cancelled" and "download.completed" not in names


async def test_transcodes_beyond_max_processing_wait_their_turn(
    make_api: MakeApi, media_origin: Origin
) -> None:
    api = await make_api(max_processing=1)
    first = await api.submit(media_origin.url("/media/long.mkv"), post_process={"transcode": "mp4"})
    await wait_ffmpeg(api)
    second = await api.submit(
        media_origin.url("/media/clip.mkv"), post_process={"transcode": "mp4"}
    )

    await api.wait_for(second["task_id"], "processing")
    # Downloaded and waiting in `processing`, with no ffmpeg of its own while the first runs
    # (watched for a while: unlimited, its ffmpeg would start right after probing).
    for _ in range(20):
        assert len(processes_mentioning(str(downloads(api)))) == 1
        assert not list(downloads(api).glob(f".{second['task_id']}.*"))
        await asyncio.sleep(0.05)
    await api.json("POST", f"/api/downloads/{first['task_id']}/cancel")
    done = await api.wait_for(second["task_id"], "completed")
    assert done["filename"] == "clip.mp4"
