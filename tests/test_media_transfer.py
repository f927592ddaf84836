"""Media sources end to end through MediaTransfer and the real yt-dlp worker, all offline.

A local site (tests/media_site.py) serves HLS streams and an MP4 that ffmpeg made for the
test, and pages embedding them; files are checked with ffprobe (tests/media.py).
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import TypedDict, Unpack

import pytest

from progress_server.filenames import sanitise
from progress_server.media.errors import MediaError
from progress_server.media.job import MediaJob
from progress_server.media.process import WorkerProcess
from progress_server.media.results import MediaFile, MediaPlaylist
from progress_server.media.transfer import MediaTransfer
from tests.media import codecs, duration
from tests.media_site import HLS_SECONDS, MP4_SECONDS, MediaSite, RecordingObserver

pytestmark = pytest.mark.timeout(180)

FAST = MediaTransfer(max_retries=0)


def never_decreasing(values: list[float]) -> bool:
    return all(later >= earlier for earlier, later in itertools.pairwise(values))


class JobOptions(TypedDict, total=False):
    """The MediaJob fields these tests set; mypy checks each against MediaJob's own."""

    format: str
    ratelimit: int | None
    playlist: bool
    playlist_index: int | None
    title: str | None


async def fetch(
    url: str, out: Path, *, transfer: MediaTransfer = FAST, **options: Unpack[JobOptions]
) -> tuple[MediaFile | MediaPlaylist, RecordingObserver]:
    observer = RecordingObserver()
    job = MediaJob(url=url, output_dir=out, **options)
    return await transfer.download(job, observer), observer


async def fetch_file(
    url: str, out: Path, **options: Unpack[JobOptions]
) -> tuple[MediaFile, RecordingObserver]:
    result, observer = await fetch(url, out, **options)
    assert isinstance(result, MediaFile), result
    return result, observer


async def test_hls_manifest_downloads_with_fragments(site: MediaSite, tmp_path: Path) -> None:
    result, observer = await fetch_file(site.url("/media/hls/index.m3u8"), tmp_path)

    assert result.path == tmp_path / "index.mp4"
    assert duration(result.path) == pytest.approx(HLS_SECONDS, abs=0.5)
    assert result.duration_seconds == pytest.approx(HLS_SECONDS, abs=0.5)
    # Keyframes every 2 s: 15 fragments, reported one after the other.
    indexes = [index for index, _ in observer.fragments_seen]
    assert observer.fragments_seen[-1] == (15, 15)
    assert indexes == sorted(indexes) and len(set(indexes)) >= 10
    assert observer.names()[:2] == ["media_extracted", "response_started"]
    assert never_decreasing(observer.percentages)
    assert observer.percentage == pytest.approx(100.0)
    assert observer.failures == []


async def test_page_with_one_video_is_named_after_its_title(
    site: MediaSite, tmp_path: Path
) -> None:
    result, observer = await fetch_file(site.url("/page/one.html"), tmp_path)

    assert observer.extracted is not None
    title = observer.extracted.title
    assert title is not None and title.startswith("One Clip")
    assert result.path.name == f"{sanitise(title)}.mp4" == observer.extracted.filename
    assert result.path.parent == tmp_path
    assert duration(result.path) == pytest.approx(HLS_SECONDS, abs=0.5)
    assert codecs(result.path) == {"video": "h264", "audio": "aac"}


async def test_video_and_audio_parts_merge_without_the_bar_going_back(
    site: MediaSite, tmp_path: Path
) -> None:
    result, observer = await fetch_file(site.url("/media/split/master.m3u8"), tmp_path)

    assert observer.extracted is not None and len(observer.extracted.parts) == 2
    # The second part's fragments start again from 1; the combined percentage does not.
    restarts = [
        later for earlier, later in itertools.pairwise(observer.fragments_seen)
        if later[0] < earlier[0]
    ]  # fmt: skip
    assert restarts, observer.fragments_seen
    assert never_decreasing(observer.percentages)
    assert len(observer.percentages) > 20
    assert observer.percentage == pytest.approx(100.0)
    assert "Merger" in [step for step, _ in observer.processing_steps]
    assert codecs(result.path) == {"video": "h264", "audio": "aac"}
    assert duration(result.path) == pytest.approx(HLS_SECONDS, abs=0.5)
    # The parts were merged away: only the finished file is left.
    assert [p.name for p in tmp_path.iterdir()] == ["master.mp4"]


async def test_page_with_two_videos_is_a_playlist(site: MediaSite, tmp_path: Path) -> None:
    result, observer = await fetch(site.url("/page/two.html"), tmp_path)

    assert isinstance(result, MediaPlaylist)
    assert result.title == "Two Clips"
    assert [e.index for e in result.entries] == [1, 2]
    assert [e.title for e in result.entries] == ["Two Clips (1)", "Two Clips (2)"]
    # A page's <video> has no URL of its own: an entry is item N of the page.
    assert all(e.url is None for e in result.entries)
    assert not list(tmp_path.iterdir())
    assert "response_started" not in observer.names()


async def test_playlist_false_and_playlist_index_take_one_item(
    site: MediaSite, tmp_path: Path
) -> None:
    first, _ = await fetch_file(site.url("/page/two.html"), tmp_path / "a", playlist=False)
    second, _ = await fetch_file(site.url("/page/two.html"), tmp_path / "b", playlist_index=2)

    assert first.path.name == "Two Clips (1).mp4"
    assert duration(first.path) == pytest.approx(MP4_SECONDS, abs=0.5)
    assert second.path.name == "Two Clips (2).mp4"
    assert duration(second.path) == pytest.approx(HLS_SECONDS, abs=0.5)


async def test_plain_mp4_reports_its_exact_size(
    site: MediaSite, tmp_path: Path, streams: Path
) -> None:
    size = (streams / "clip.mp4").stat().st_size

    result, observer = await fetch_file(site.url("/media/clip.mp4"), tmp_path)

    assert result.size == size
    assert observer.total == size and observer.downloaded == size
    assert duration(result.path) == pytest.approx(MP4_SECONDS, abs=0.5)
    assert observer.fragments_seen == []


async def test_title_override_names_the_file(site: MediaSite, tmp_path: Path) -> None:
    result, _ = await fetch_file(
        site.url("/media/clip.mp4"), tmp_path, title="Holiday: day 1/2 ..."
    )

    assert result.path.name == f"{sanitise('Holiday: day 1/2 ...')}.mp4"
    assert result.path.parent == tmp_path


async def test_page_without_media_fails_with_extract_error(site: MediaSite, tmp_path: Path) -> None:
    url = site.url("/page/none.html")
    with pytest.raises(MediaError) as caught:
        await fetch(url, tmp_path, transfer=MediaTransfer(max_retries=3, retry_base_delay=0.01))

    assert caught.value.error_type == "extract_error"
    assert caught.value.message == f"Unsupported URL: {url}"
    assert not caught.value.retryable


async def test_missing_manifest_is_an_http_error(site: MediaSite, tmp_path: Path) -> None:
    with pytest.raises(MediaError) as caught:
        await fetch(site.url("/media/hls/gone.m3u8"), tmp_path)

    assert caught.value.error_type == "http_error"
    assert caught.value.status == 404


async def test_format_selector_picks_audio_only(site: MediaSite, tmp_path: Path) -> None:
    result, observer = await fetch_file(
        site.url("/media/split/master.m3u8"), tmp_path, format="ba/b"
    )

    assert codecs(result.path) == {"audio": "aac"}
    assert observer.extracted is not None and len(observer.extracted.parts) == 1


async def test_unavailable_format_fails_with_extract_error(site: MediaSite, tmp_path: Path) -> None:
    with pytest.raises(MediaError) as caught:
        await fetch(site.url("/media/clip.mp4"), tmp_path, format="bv*[height>=4320]")

    assert caught.value.error_type == "extract_error"
    assert "format is not available" in caught.value.message


async def test_ratelimit_holds_the_worker_to_it(site: MediaSite, tmp_path: Path) -> None:
    limit = 250_000
    _, observer = await fetch_file(site.url("/media/hls/index.m3u8"), tmp_path, ratelimit=limit)

    assert observer.started_at is not None and observer.last_received_at is not None
    elapsed = observer.last_received_at - observer.started_at
    moved = observer.downloaded - observer.offsets[0]
    # ~0.9 MB at 250 kB/s: well over 3 s, where the origin alone takes a fraction of one.
    assert moved > 800_000
    assert moved / elapsed <= 1.1 * limit


@pytest.mark.parametrize(("page", "status"), [("/media/clip.mp4", 0), ("/page/none.html", 1)])
async def test_the_worker_exits_with_its_status_once_its_last_line_is_out(
    site: MediaSite, tmp_path: Path, page: str, status: int
) -> None:
    """Its stdin stays open (supervised) as under MediaTransfer. A worker that aborts at
    shutdown instead (SIGABRT, after the interpreter waited a second for a lock) leaves
    every task a second late and looks killed rather than finished."""
    job = MediaJob(url=site.url(page), output_dir=tmp_path)
    worker = await WorkerProcess.start(job.to_json())
    try:
        last = [event["event"] async for event in worker.events()][-1]
        code = await worker.wait()
    finally:
        await worker.stop()

    assert last == ("finished" if status == 0 else "error")
    assert code == status, worker.last_stderr_line
