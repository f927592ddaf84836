"""A media download through MediaTransfer against `yt-dlp` run directly on the same URL.

Both fetch the same local HLS VOD stream (made here by ffmpeg; 2 s fragments) from the same
origin, which runs in a thread of its own; the rounds alternate so load on the machine
hits both alike. The wrapping (a worker process, JSON lines, the observer calls) should
cost almost nothing: the goal is MediaTransfer's wall time within 1/0.9 of yt-dlp's,
i.e. a speed ratio of at least 0.9.

On a shared machine wall times swing by 2x between rounds, so each run also reports CPU
seconds (this process, which serves the site for both, plus its waited-for children: the
worker or yt-dlp, and the ffmpeg they start), which load barely moves.

    python bench/media.py [--seconds 600] [--size 640x360] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from progress_server.media.job import MediaJob
from progress_server.media.results import MediaFile
from progress_server.media.transfer import MediaTransfer
from tests.media import duration
from tests.media_site import MediaSite, RecordingObserver, make_hls


def cpu_seconds() -> float:
    """CPU used so far by this process and by its children that have been waited for."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class SiteThread:
    """The site on its own event loop, so serving never competes with the client's loop."""

    def __init__(self, media_dir: Path) -> None:
        self.media_dir = media_dir
        self.site: MediaSite | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with MediaSite(self.media_dir) as site:
            self.site = site
            self._ready.set()
            await self._stop.wait()

    def __enter__(self) -> MediaSite:
        self._thread.start()
        self._ready.wait(30)
        assert self.site is not None
        return self.site

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


async def via_transfer(url: str, out: Path) -> tuple[float, float, Path, int]:
    observer = RecordingObserver()
    job = MediaJob(url=url, output_dir=out)
    started, cpu = time.perf_counter(), cpu_seconds()
    result = await MediaTransfer(max_retries=0).download(job, observer)
    elapsed, cpu = time.perf_counter() - started, cpu_seconds() - cpu
    assert isinstance(result, MediaFile), result
    return elapsed, cpu, result.path, len(observer.calls)


async def via_yt_dlp(url: str, out: Path) -> tuple[float, float, Path]:
    argv = [sys.executable, "-m", "yt_dlp", "--quiet", "--no-progress", "--no-cache-dir"]
    argv += ["--paths", str(out), "--output", "%(title)s.%(ext)s", url]
    started, cpu = time.perf_counter(), cpu_seconds()
    proc = await asyncio.create_subprocess_exec(*argv)
    assert await proc.wait() == 0
    elapsed, cpu = time.perf_counter() - started, cpu_seconds() - cpu
    return elapsed, cpu, next(out.glob("*.mp4"))


async def run(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-media-"))
    try:
        print(f"making a {args.seconds} s {args.size} HLS stream ...", flush=True)
        stream = make_hls(work / "stream", seconds=args.seconds, size=args.size)
        size = sum(p.stat().st_size for p in stream.glob("*.ts"))
        fragments = len(list(stream.glob("*.ts")))
        print(f"  {size / 1e6:.1f} MB in {fragments} fragments")
        ours: list[float] = []
        theirs: list[float] = []
        ours_cpu: list[float] = []
        theirs_cpu: list[float] = []
        with SiteThread(work) as site:
            url = site.url("/media/stream/index.m3u8")
            for n in range(args.rounds):
                t_dir, y_dir = work / f"t{n}", work / f"y{n}"
                y_time, y_cpu, y_path = await via_yt_dlp(url, y_dir)
                t_time, t_cpu, t_path, calls = await via_transfer(url, t_dir)
                assert abs(duration(t_path) - duration(y_path)) < 0.5
                ours.append(t_time)
                theirs.append(y_time)
                ours_cpu.append(t_cpu)
                theirs_cpu.append(y_cpu)
                print(
                    f"  round {n + 1}: yt-dlp {y_time:.2f} s ({y_cpu:.2f} s CPU), "
                    f"MediaTransfer {t_time:.2f} s ({t_cpu:.2f} s CPU, {calls} observer calls)",
                    flush=True,
                )
                shutil.rmtree(t_dir)
                shutil.rmtree(y_dir)
        for label, mine, yours in (
            ("best wall", min(ours), min(theirs)),
            ("median wall", statistics.median(ours), statistics.median(theirs)),
            ("median CPU", statistics.median(ours_cpu), statistics.median(theirs_cpu)),
        ):
            print(
                f"{label}: yt-dlp {yours:.2f} s, MediaTransfer {mine:.2f} s; "
                f"ratio {yours / mine:.2f} (goal >= 0.9)"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=600, help="stream length (s)")
    parser.add_argument("--size", default="640x360", help="video size")
    parser.add_argument("--rounds", type=int, default=3)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
