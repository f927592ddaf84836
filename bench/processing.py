"""Transcodes versus everything else: polling latency and download time while ffmpeg runs.

Baseline from the same run: the same server, the same polls and the same download with no
transcode running. Then N H.264 transcodes of a generated 60-second 640x360 video are
started (`--max-processing N`) and, while they run, the measurements are repeated.
Processing runs in niced subprocesses, so on a small machine the transcodes should slow
down, not the server: the ratios should stay near 1.

    python bench/processing.py [--transcodes 2] [--polls 300] [--download-mb 50]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.soak import OriginThread
from tests.media import make_video, processes_mentioning
from tests.origins import Origin
from tests.serverproc import ServerProcess, create_key


class Bench:
    def __init__(self, server: ServerProcess, key: str, session: aiohttp.ClientSession) -> None:
        self.server = server
        self.session = session
        self.headers = {"Authorization": f"Bearer {key}"}

    async def call(self, method: str, path: str, **kwargs: Any) -> Any:
        url = self.server.base_url + path
        async with self.session.request(method, url, headers=self.headers, **kwargs) as resp:
            assert resp.status < 300, await resp.text()
            return await resp.json()

    async def submit(self, url: str, **fields: Any) -> str:
        task = await self.call("POST", "/api/downloads", json={"url": url, **fields})
        return str(task["task_id"])

    async def wait(self, task_id: str, state: str) -> None:
        while True:
            if (await self.call("GET", f"/api/downloads/{task_id}"))["state"] == state:
                return
            await asyncio.sleep(0.02)

    async def poll_latencies(self, task_id: str, count: int) -> list[float]:
        latencies = []
        for _ in range(count):
            started = time.perf_counter()
            await self.call("GET", f"/api/progress/{task_id}")
            latencies.append(time.perf_counter() - started)
        return latencies

    async def download_seconds(self, url: str) -> float:
        started = time.perf_counter()
        await self.wait(await self.submit(url), "completed")
        return time.perf_counter() - started


def summary(latencies: list[float]) -> tuple[float, float]:
    ordered = sorted(latencies)
    return statistics.median(ordered) * 1000, ordered[int(len(ordered) * 0.99) - 1] * 1000


async def measure(bench: Bench, poll_id: str, url: str, polls: int) -> tuple[float, float, float]:
    p50, p99 = summary(await bench.poll_latencies(poll_id, polls))
    return p50, p99, await bench.download_seconds(url)


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        media = root / "media"
        media.mkdir()
        print("making a 60 s 640x360 test video ...", flush=True)
        make_video(media / "long.mkv", seconds=60, size="640x360", rate=25)
        data = root / "data"
        key = create_key(data, "bench")
        origin_thread = OriginThread()
        origin_thread.origin = Origin(media_dir=media)
        with (
            origin_thread as origin,
            ServerProcess(
                data, "--max-processing", str(args.transcodes), "--max-concurrent", "8"
            ) as server,
        ):
            async with aiohttp.ClientSession() as session:
                bench = Bench(server, key, session)
                poll_id = await bench.submit(origin.url("/file/small.bin", size=1000))
                await bench.wait(poll_id, "completed")
                size = args.download_mb * 1_000_000

                def file_url(n: int) -> str:
                    return origin.url(f"/file/dl{n}.bin", size=size, seed=n)

                idle = await measure(bench, poll_id, file_url(1), args.polls)

                for _ in range(args.transcodes):
                    await bench.submit(
                        origin.url("/media/long.mkv"), post_process={"transcode": "mp4"}
                    )
                while True:
                    if len(processes_mentioning(str(data))) >= args.transcodes:
                        break
                    await asyncio.sleep(0.05)
                busy = await measure(bench, poll_id, file_url(2), args.polls)
                still = len(processes_mentioning(str(data)))

    print(f"{args.transcodes} transcode(s), {args.polls} polls, {args.download_mb} MB download")
    print(f"{'':24}{'idle':>10}{'transcoding':>14}{'ratio':>8}")
    for label, a, b in (
        ("poll p50 (ms)", idle[0], busy[0]),
        ("poll p99 (ms)", idle[1], busy[1]),
        ("download (s)", idle[2], busy[2]),
    ):
        print(f"{label:24}{a:10.2f}{b:14.2f}{b / a:8.2f}")
    if still < args.transcodes:
        print(f"note: only {still} transcode(s) still ran at the end of the busy measurement")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transcodes", type=int, default=2)
    parser.add_argument("--polls", type=int, default=300)
    parser.add_argument("--download-mb", type=int, default=50)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
