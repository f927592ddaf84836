"""Media sources: a download through MediaTransfer against `yt-dlp` run directly on the same
URL, and the server's polling latency while two media tasks run against two plain downloads.

Both fetch the same local HLS VOD stream (made here by ffmpeg; 2 s fragments) from the same
origin, which runs in a thread of its own; the rounds alternate so load on the machine
hits both alike. The wrapping (a worker process, JSON lines, the observer calls) should
cost almost nothing: the goal is MediaTransfer's wall time within 1/0.9 of yt-dlp's,
i.e. a speed ratio of at least 0.9.

On a shared machine wall times swing by 2x between rounds, so each run also reports CPU
seconds (this process, which serves the site for both, plus its waited-for children: the
worker or yt-dlp, and the ffmpeg they start), which load barely moves.

Polling (`--part polling`): the real server process (tests/serverproc.py) is polled
(`GET /api/progress/{id}`, one request at a time) while it is idle, while it runs two plain
downloads, and while it runs two media tasks of the same bytes at the same rate (an HLS
stream's fragments, and for the plain ones those fragments joined into one file). The plain
downloads are the same-run baseline: they show what media adds on the server's event loop
(reading the workers' JSON lines, publishing their progress). Each phase also reports the
server process's CPU seconds, from /proc.

    python bench/media.py [--part transfer|polling|both] [--seconds 600] [--size 640x360]
                          [--rounds 3] [--poll-seconds 60] [--rate 150000]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import resource
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from progress_server.media.job import MediaJob
from progress_server.media.results import MediaFile
from progress_server.media.transfer import MediaTransfer
from tests.media import duration
from tests.media_site import MediaSite, RecordingObserver, make_hls
from tests.serverproc import ServerProcess, create_key


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


async def run_transfer(args: argparse.Namespace) -> None:
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


# -- polling latency while media tasks run ------------------------------------------------


def server_cpu(pid: int) -> float:
    """CPU seconds the server process has used (utime + stime, from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Phase:
    name: str
    latencies: list[float]
    cpu: float
    seconds: float

    def line(self) -> str:
        ms = sorted(x * 1000 for x in self.latencies)

        def pick(q: float) -> float:
            return ms[min(len(ms) - 1, int(q * len(ms)))]

        return (
            f"{self.name:<20} {len(ms):>6} polls  p50 {pick(0.5):6.2f} ms  p95 {pick(0.95):6.2f}"
            f" ms  p99 {pick(0.99):6.2f} ms  max {ms[-1]:7.2f} ms  "
            f"server CPU {self.cpu / self.seconds:5.1%}"
        )


class Polled:
    def __init__(self, server: ServerProcess, key: str, session: aiohttp.ClientSession) -> None:
        self.server, self.session = server, session
        self.headers = {"Authorization": f"Bearer {key}"}

    async def submit(self, body: dict[str, object]) -> str:
        async with self.session.post(
            self.server.base_url + "/api/downloads", json=body, headers=self.headers
        ) as resp:
            assert resp.status == 201, await resp.text()
            return str((await resp.json())["task_id"])

    async def state(self, task_id: str) -> str:
        url = f"{self.server.base_url}/api/progress/{task_id}"
        async with self.session.get(url, headers=self.headers) as resp:
            return str((await resp.json())["state"])

    async def poll(self, task_ids: list[str], until: Callable[[], Awaitable[bool]]) -> Phase:
        """Poll the tasks in turn, one request at a time, until `until()` says stop."""
        assert self.server.pid is not None
        latencies: list[float] = []
        cpu, began = server_cpu(self.server.pid), time.perf_counter()
        n = 0
        while not await until():
            for _ in range(20):
                url = f"{self.server.base_url}/api/progress/{task_ids[n % len(task_ids)]}"
                n += 1
                sent = time.perf_counter()
                async with self.session.get(url, headers=self.headers) as resp:
                    await resp.read()
                latencies.append(time.perf_counter() - sent)
                # A client polling often, not a load generator: the loop's own delays show.
                await asyncio.sleep(0.01)
        seconds = time.perf_counter() - began
        return Phase("", latencies, server_cpu(self.server.pid) - cpu, seconds)


async def run_polling(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-media-poll-"))
    # Long enough that a task at --rate takes about --poll-seconds (320x240: ~30 kB/s).
    length = max(10, int(args.poll_seconds * args.rate / 30_000))
    print(f"making a {length} s 320x240 HLS stream ...", flush=True)
    stream = make_hls(work / "poll", seconds=length, size="320x240")
    joined = stream / "joined.ts"
    joined.write_bytes(b"".join(p.read_bytes() for p in sorted(stream.glob("seg*.ts"))))
    print(f"  {joined.stat().st_size / 1e6:.1f} MB, {len(list(stream.glob('seg*.ts')))} fragments")
    data = work / "data"
    key = await asyncio.to_thread(create_key, data, "bench")
    server = ServerProcess(data, "--max-concurrent", "4", "--max-per-host", "4")
    try:
        with SiteThread(work) as site:
            await asyncio.to_thread(server.start)
            async with aiohttp.ClientSession() as session:
                polled = Polled(server, key, session)
                # A finished task to poll while idle (its snapshot never changes).
                idle_id = await polled.submit({"url": site.url("/media/clip.mp4", rate=None)})
                phases = [await phase_idle(polled, idle_id, args.poll_seconds / 3)]
                for name, body in (
                    (
                        "2 plain downloads",
                        {"url": site.url("/media/poll/joined.ts", rate=args.rate)},
                    ),
                    ("2 media tasks", {"url": site.url("/media/poll/index.m3u8", rate=args.rate)}),
                ):
                    ids = [await polled.submit(dict(body)) for _ in range(2)]
                    phase = await polled.poll(ids, functools.partial(all_done, polled, ids))
                    phase.name = name
                    phases.append(phase)
                    print(f"  {phase.line()}", flush=True)
        print("polling latency, one request at a time (same run):")
        for phase in phases:
            print(f"  {phase.line()}")
    finally:
        if server.running:
            await asyncio.to_thread(server.stop)
        shutil.rmtree(work, ignore_errors=True)


async def phase_idle(polled: Polled, task_id: str, seconds: float) -> Phase:
    for _ in range(600):
        if await polled.state(task_id) in ("completed", "failed"):
            break
        await asyncio.sleep(0.2)
    deadline = time.monotonic() + seconds

    async def over() -> bool:
        return time.monotonic() > deadline

    phase = await polled.poll([task_id], over)
    phase.name = "idle"
    print(f"  {phase.line()}", flush=True)
    return phase


async def all_done(polled: Polled, task_ids: list[str]) -> bool:
    states = [await polled.state(t) for t in task_ids]
    assert "failed" not in states, states
    return all(s == "completed" for s in states)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", choices=["transfer", "polling", "both"], default="both")
    parser.add_argument("--seconds", type=int, default=600, help="stream length (s)")
    parser.add_argument("--size", default="640x360", help="video size")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--poll-seconds", type=float, default=60, help="each busy phase (s)")
    parser.add_argument("--rate", type=int, default=150_000, help="bytes/s per task")
    args = parser.parse_args()
    if args.part in ("transfer", "both"):
        asyncio.run(run_transfer(args))
    if args.part in ("polling", "both"):
        asyncio.run(run_polling(args))


if __name__ == "__main__":
    main()
