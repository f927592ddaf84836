"""Throughput: progress-server against curl and aria2c, on a throttled origin, one big file
and many small ones.

Three cases, each timed in the same run, in interleaved rounds:

    throttled   96 MB from an origin (tests/origins.py in its own process) that throttles
                each TCP connection to 8 MB/s: one curl connection; aria2c -x4 -s4;
                progress-server with its default --segments 4
    big file    512 MiB from nginx (or an aiohttp static server when nginx is missing):
                curl; aria2c with one connection; curl followed by an fsync of its file;
                progress-server
    100 small   100 x 1 MiB from nginx: curl --parallel (16); aria2c -j 16;
                progress-server, 16 at once

progress-server runs as a subprocess (`serve`, a fresh temp data dir each round) and is
timed twice: the transfer alone (first `download.started` to last `download.processing`
by its own event clock: bytes on disk, sha256 of every byte, fsync) and submit ->
`completed` (post-processing such as the media probe included). curl and aria2c neither
hash nor fsync; "curl, then fsync" shows what durability costs on this disk.
Printed: medians and every run, throughput ratios, the server's RSS before/after and
peak (VmHWM from /proc), and its worst event-loop lag (from /metrics, or its shutdown
log line).

    python bench/throughput.py                                 # all three, 3 rounds
    python bench/throughput.py --cases throttled --rounds 2    # one case, quicker
    python bench/throughput.py --cases small --profile prof/   # py-spy on the server

With `--profile DIR`, py-spy (`pip install py-spy`) samples the server of every small-files
round; the raw stacks land in DIR and the hottest functions are printed.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.serverproc import ServerProcess, create_key, free_port

MiB = 1024 * 1024
# POSTs in flight at once when many files are submitted.
SUBMITTERS = 16
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# -- the origin --------------------------------------------------------------------------


def serve_static(root: str, port: int) -> None:
    """`--serve`: an aiohttp static server (FileResponse uses sendfile)."""
    from aiohttp import web

    app = web.Application()
    app.router.add_static("/", root)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


class StaticOrigin:
    def __init__(self, root: Path, work: Path) -> None:
        self.root = root
        self.work = work
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.kind = ""

    def __enter__(self) -> StaticOrigin:
        nginx = shutil.which("nginx")
        if nginx:
            self.kind = "nginx (Debian)"
            conf = self.work / "nginx.conf"
            conf.write_text(
                f"daemon off; worker_processes 2; pid {self.work}/nginx.pid;"
                f" error_log {self.work}/nginx.err;"
                " events { worker_connections 1024; }"
                " http { access_log off; sendfile on; tcp_nopush on;"
                f" server {{ listen 127.0.0.1:{self.port}; root {self.root}; }} }}"
            )
            cmd = [nginx, "-c", str(conf), "-p", str(self.work)]
        else:
            self.kind = "aiohttp static server (nginx is not installed)"
            cmd = [sys.executable, __file__, "--serve", str(self.root), str(self.port)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while True:
            try:
                _NO_PROXY.open(self.url("small/0.bin"), timeout=1).read()
                return self
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)


def serve_throttled(port: int) -> None:
    """`--serve-origin`: the tests' fault-injecting origin, on a fixed port, until killed."""
    import asyncio

    from tests.origins import Origin

    async def forever() -> None:
        async with Origin(port=port):
            await asyncio.Event().wait()

    asyncio.run(forever())


class ThrottledOrigin:
    """tests/origins.py's Origin in its own process: `conn_rate` throttles each connection."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ThrottledOrigin:
        cmd = [sys.executable, __file__, "--serve-origin", str(self.port)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while True:
            try:
                _NO_PROXY.open(self.url(1000, 1), timeout=1).read()
                return self
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def url(self, size: int, rate: int) -> str:
        return f"http://127.0.0.1:{self.port}/file/t.bin?size={size}&conn_rate={rate}&seed=1"

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)


def make_files(root: Path, big_mb: int, small: int) -> None:
    """Incompressible, non-repeating content: 1 MiB of random bytes, rotated per block."""
    block = os.urandom(MiB)
    (root / "small").mkdir(parents=True, mode=0o755)
    with open(root / "big.bin", "wb") as f:
        for i in range(big_mb):
            k = (i * 7919) % MiB
            f.write(block[k:] + block[:k])
    for i in range(small):
        k = (i * 104729) % MiB
        (root / "small" / f"{i}.bin").write_bytes(block[k:] + block[:k])


# -- baselines ---------------------------------------------------------------------------


def timed(run: Callable[[], object]) -> float:
    os.sync()  # the previous run's dirty pages must not slow this one
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def children_cpu() -> float:
    """CPU seconds (user + system) of every finished child so far."""
    times = os.times()
    return times.children_user + times.children_system


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a running process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def sh(*cmd: str, cwd: Path | None = None) -> None:
    subprocess.run(cmd, check=True, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def curl_and_sync(url: str, target: Path) -> None:
    sh("curl", "-sf", "-o", str(target), url)
    sh("sync", str(target))  # coreutils: fsync of that one file


def fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


# -- progress-server ---------------------------------------------------------------------


class Server:
    def __init__(self, data_dir: Path, *args: str) -> None:
        # Admin: /metrics needs it.
        self.key = create_key(data_dir, "bench", admin=True)
        self.proc = ServerProcess(data_dir, "--min-free-space", "0", *args)

    def __enter__(self) -> Server:
        self.proc.start()
        self.warm_up()
        return self

    def warm_up(self) -> None:
        """One throwaway submission before anything is timed. A server's first submission
        with the default source ("auto") loads yt-dlp's URL patterns when yt-dlp is
        installed (about a second of CPU, once per process); a long-running server paid
        for it long ago, and the rounds here each start a fresh one."""
        task = self.call("POST", "/api/downloads", {"url": "http://127.0.0.1:9/warm-up.bin"})
        self.call("DELETE", f"/api/downloads/{task['task_id']}")

    def __exit__(self, *exc: object) -> None:
        if self.proc.running:
            self.proc.stop()

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.proc.base_url + path,
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"},
        )
        with _NO_PROXY.open(request, timeout=30) as resp:
            raw = resp.read()
        return json.loads(raw) if raw else None

    def download_all(self, urls: list[str]) -> tuple[float, float]:
        """Submit every URL and wait until all are completed.

        Returns seconds from the first submit to the last `completed`, and the transfer
        alone by the server's event clock: first `download.started` to last
        `download.processing` (bytes on disk, hashed and fsynced; post-processing such as
        the media probe not included).
        """
        os.sync()
        started = time.perf_counter()
        # All at once, as a busy client would: SUBMITTERS requests in flight.
        with ThreadPoolExecutor(SUBMITTERS) as pool:
            ids = list(pool.map(self.submit, urls))
        # Is any task unfinished? One row answers it, every 50 ms: polling must not be what
        # loads the server's loop (listing 100 records 20 times a second would).
        unfinished = "/api/downloads?state=pending,downloading,processing,paused&limit=1"
        while self.call("GET", unfinished)["tasks"]:
            time.sleep(0.05)
        total = time.perf_counter() - started
        failed = self.call("GET", "/api/downloads?state=failed,cancelled&limit=500")["tasks"]
        if failed:
            raise RuntimeError(f"tasks did not complete: {failed}")
        stamps: dict[str, list[datetime]] = {"download.started": [], "download.processing": []}
        for task_id in ids:
            for event in self.call("GET", f"/api/downloads/{task_id}/events")["events"]:
                if event["event"] in stamps:
                    stamps[event["event"]].append(datetime.fromisoformat(event["timestamp"]))
        transfer = max(stamps["download.processing"]) - min(stamps["download.started"])
        return total, transfer.total_seconds()

    def submit(self, url: str) -> str:
        task_id: str = self.call("POST", "/api/downloads", {"url": url})["task_id"]
        return task_id

    def delete_all(self) -> None:
        for task in self.call("GET", "/api/downloads?limit=500")["tasks"]:
            self.call("DELETE", f"/api/downloads/{task['task_id']}?delete_file=true")

    def memory(self) -> tuple[int, int]:
        """(VmRSS, VmHWM) in bytes."""
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        values = dict(re.findall(r"^(VmRSS|VmHWM):\s+(\d+) kB", status, re.M))
        return int(values["VmRSS"]) * 1024, int(values["VmHWM"]) * 1024

    def worst_lag_ms(self) -> float | None:
        """Worst event-loop lag since start: from /metrics while running, else the log line
        LoopLagMonitor writes at shutdown."""
        if self.proc.running:
            request = urllib.request.Request(
                self.proc.base_url + "/metrics", headers={"Authorization": f"Bearer {self.key}"}
            )
            try:
                with _NO_PROXY.open(request, timeout=30) as resp:
                    text = resp.read().decode()
            except OSError:
                return None
            found = re.search(r"^progress_server_event_loop_lag_max_seconds (\S+)", text, re.M)
            return float(found.group(1)) * 1000 if found else None
        match = re.findall(r"event loop lag: worst ([\d.]+) ms", self.proc.log_text())
        return float(match[-1]) if match else None


# -- the run -----------------------------------------------------------------------------


@dataclass
class Row:
    name: str
    runs: list[float]
    nbytes: int

    @property
    def seconds(self) -> float:
        return statistics.median(self.runs)

    @property
    def mbps(self) -> float:
        return self.nbytes / self.seconds / 1e6


def report(title: str, rows: list[Row], baselines: int = 2) -> None:
    """Baselines first, then progress-server's rows; ratios are throughput ratios."""
    print(f"\n{title} (median of {len(rows[0].runs)} runs)")
    for row in rows:
        runs = " ".join(f"{r:.2f}" for r in row.runs)
        print(f"  {row.name:<36} {row.seconds:7.2f} s {row.mbps:8.1f} MB/s   runs: {runs}")
    for mine in rows[baselines:]:
        ratios = ", ".join(f"{b.seconds / mine.seconds:.2f} of {b.name}" for b in rows[:baselines])
        print(f"  {mine.name}: {ratios}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--cases", default="throttled,big,small", help="which cases, comma-separated"
    )
    parser.add_argument("--big-mb", type=int, default=512, help="size of the big file (MiB)")
    parser.add_argument("--small", type=int, default=100, help="number of 1 MiB files")
    parser.add_argument("--throttled-mb", type=int, default=96, help="throttled file (10^6 B)")
    parser.add_argument("--conn-rate", type=float, default=8.0, help="MB/s per connection")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each, interleaved")
    parser.add_argument("--profile", type=Path, help="py-spy the small-files server into DIR")
    parser.add_argument("--serve", nargs=2, metavar=("ROOT", "PORT"), help=argparse.SUPPRESS)
    parser.add_argument("--serve-origin", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve_static(args.serve[0], int(args.serve[1]))
        return
    if args.serve_origin:
        serve_throttled(args.serve_origin)
        return
    for tool in ("curl", "aria2c"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is not installed (Debian: apt-get install curl aria2)")
    cases = set(args.cases.split(","))
    print(f"{os.cpu_count()} CPUs; {args.rounds} rounds; load average {os.getloadavg()[0]:.1f}")

    with tempfile.TemporaryDirectory(prefix="ps-bench-") as tmp:
        work = Path(tmp)
        if "throttled" in cases:
            with ThrottledOrigin() as throttled:
                run_throttled(args, work, throttled)
        if not cases & {"big", "small"}:
            return
        # nginx workers run as another user: they must be able to read the files.
        work.chmod(0o755)
        root = work / "www"
        root.mkdir(mode=0o755)
        make_files(root, args.big_mb if "big" in cases else 1, args.small)
        # Read once so every contender gets the origin's file from the page cache.
        with open(root / "big.bin", "rb") as f:
            while f.read(16 * MiB):
                pass
        with StaticOrigin(root, work) as origin:
            print(f"\norigin: {origin.kind} on 127.0.0.1:{origin.port}")
            if "big" in cases:
                run_big(args, work, origin)
            if "small" in cases:
                run_small(args, work, origin)
        print(f"load average at the end: {os.getloadavg()[0]:.1f}")


ARIA = ["aria2c", "-q", "--file-allocation=none", "--allow-overwrite=true"]


def run_throttled(args: argparse.Namespace, work: Path, origin: ThrottledOrigin) -> None:
    size = args.throttled_mb * 1_000_000
    url = origin.url(size, int(args.conn_rate * 1_000_000))
    out = work / "out"
    rows = [
        Row("curl (one connection)", [], size),
        Row("aria2c -x4 -s4", [], size),
        Row("progress-server, transfer only", [], size),
        Row("progress-server, submit->completed", [], size),
    ]
    print(f"\nthrottled origin: {args.throttled_mb} MB, each connection at {args.conn_rate:g} MB/s")
    for i in range(args.rounds):
        rows[0].runs.append(timed(lambda: sh("curl", "-sf", "-o", str(fresh(out) / "t"), url)))
        rows[1].runs.append(timed(lambda: sh(*ARIA, "-x4", "-s4", "-d", str(fresh(out)), url)))
        shutil.rmtree(out, ignore_errors=True)
        with Server(work / f"server-throttled-{i}") as server:
            total, transfer = server.download_all([url])
        rows[2].runs.append(transfer)
        rows[3].runs.append(total)
        shutil.rmtree(work / f"server-throttled-{i}", ignore_errors=True)
    report("throttled", rows, baselines=2)
    print(
        f"  goals: {rows[0].seconds / rows[2].seconds:.2f} x one curl connection (>= 3.5),"
        f" {rows[1].seconds / rows[2].seconds:.2f} x aria2c -x4 (>= 1.0), transfer only;"
        f" {rows[0].seconds / rows[3].seconds:.2f} / {rows[1].seconds / rows[3].seconds:.2f}"
        " submit->completed"
    )


def run_big(args: argparse.Namespace, work: Path, origin: StaticOrigin) -> None:
    out = work / "out"
    big_url = origin.url("big.bin")
    big = args.big_mb * MiB
    big_rows = [
        Row("curl", [], big),
        Row("aria2c -x1 (one connection)", [], big),
        Row("curl, then fsync of its file", [], big),
        Row("progress-server, transfer only", [], big),
        Row("progress-server, submit->completed", [], big),
    ]
    peaks: list[int] = []
    rss: list[tuple[int, int]] = []
    lags: list[float] = []
    for i in range(args.rounds):
        big_rows[0].runs.append(
            timed(lambda: sh("curl", "-sf", "-o", str(fresh(out) / "b"), big_url))
        )
        big_rows[1].runs.append(
            timed(lambda: sh(*ARIA, "-x1", "-s1", "-d", str(fresh(out)), big_url))
        )
        # What progress-server does before `completed`: the bytes are on the disk.
        big_rows[2].runs.append(timed(lambda: curl_and_sync(big_url, fresh(out) / "b")))
        shutil.rmtree(out, ignore_errors=True)
        # A fresh server each round, so its worst loop lag is this download's (and start-up's).
        os.sync()
        with Server(work / f"server-big-{i}") as server:
            before, _ = server.memory()
            total, transfer = server.download_all([big_url])
            after, peak = server.memory()
            lag = server.worst_lag_ms()
        lags.append(lag if lag is not None else server.worst_lag_ms() or float("nan"))
        big_rows[3].runs.append(transfer)
        big_rows[4].runs.append(total)
        rss.append((before, after))
        peaks.append(peak)
        shutil.rmtree(work / f"server-big-{i}", ignore_errors=True)

    report(f"big file ({args.big_mb} MiB)", big_rows, baselines=3)
    print(
        f"  goals: {big_rows[0].seconds / big_rows[3].seconds:.2f} /"
        f" {big_rows[0].seconds / big_rows[4].seconds:.2f} of curl's throughput (>= 0.9);"
        f" {big_rows[2].seconds / big_rows[3].seconds:.2f} /"
        f" {big_rows[2].seconds / big_rows[4].seconds:.2f} of curl's with its file fsynced"
        " (>= 1.0), transfer only / submit->completed"
    )
    rss_text = ", ".join(f"{b / MiB:.0f}->{a / MiB:.0f}" for b, a in rss)
    print(f"  server RSS before->after each download: {rss_text} MiB")
    print(f"  server peak RSS (VmHWM) per run: {', '.join(f'{p / MiB:.0f}' for p in peaks)} MiB")
    print(f"  worst event-loop lag per run: {', '.join(f'{v:.1f}' for v in lags)} ms (goal < 50)")


def run_small(args: argparse.Namespace, work: Path, origin: StaticOrigin) -> None:
    out = work / "out"
    urls = [origin.url(f"small/{i}.bin") for i in range(args.small)]
    listing = work / "urls.txt"
    listing.write_text("\n".join(urls) + "\n")
    curl_many = ["curl", "-sf", "--parallel", "--parallel-max", "16"]
    for i, u in enumerate(urls):
        curl_many += ["-o", f"{i}.bin", u]
    small = args.small * MiB
    small_rows = [
        Row("curl --parallel-max 16", [], small),
        Row("aria2c -j 16", [], small),
        Row("progress-server, transfer only", [], small),
        Row("progress-server, submit->completed", [], small),
    ]
    peaks: list[int] = []
    lags: list[float] = []
    # CPU seconds per run: on a shared machine the wall clock moves with the load, the
    # work done much less.
    aria_cpu: list[float] = []
    server_cpu: list[float] = []
    small_args = ("--max-concurrent", "16", "--max-per-host", "16")
    for i in range(args.rounds):
        small_rows[0].runs.append(timed(lambda: sh(*curl_many, cwd=fresh(out))))
        before = children_cpu()
        small_rows[1].runs.append(
            timed(lambda: sh(*ARIA, "-j", "16", "-d", str(fresh(out)), "-i", str(listing)))
        )
        aria_cpu.append(children_cpu() - before)
        shutil.rmtree(out, ignore_errors=True)
        os.sync()
        with Server(work / f"server-small-{i}", *small_args) as server:
            spy = profiler(args.profile, f"small-{i}", server.proc.pid)
            assert server.proc.pid is not None
            before = process_cpu(server.proc.pid)
            total, transfer = server.download_all(urls)
            server_cpu.append(process_cpu(server.proc.pid) - before)
            if spy is not None:
                spy.send_signal(signal.SIGINT)  # py-spy writes its samples and exits
                spy.wait(timeout=60)
            _, peak = server.memory()
            lag = server.worst_lag_ms()
        lags.append(lag if lag is not None else server.worst_lag_ms() or float("nan"))
        small_rows[2].runs.append(transfer)
        small_rows[3].runs.append(total)
        peaks.append(peak)
        shutil.rmtree(work / f"server-small-{i}", ignore_errors=True)

    report(f"{args.small} files of 1 MiB", small_rows)
    print(
        f"  goal: {small_rows[1].seconds / small_rows[2].seconds:.2f} /"
        f" {small_rows[1].seconds / small_rows[3].seconds:.2f} of aria2c -j 16's (>= 1.0),"
        " transfer only / submit->completed"
    )
    print(
        f"  CPU seconds per run: aria2c {' '.join(f'{c:.2f}' for c in aria_cpu)};"
        f" server {' '.join(f'{c:.2f}' for c in server_cpu)}"
        " (submissions, events, fsyncs and polling included)"
    )
    print(f"  server peak RSS (VmHWM) per run: {', '.join(f'{p / MiB:.0f}' for p in peaks)} MiB")
    print(f"  worst event-loop lag per run: {', '.join(f'{v:.1f}' for v in lags)} ms (goal < 50)")
    if args.profile:
        hottest(sorted(args.profile.glob("small-*.txt")))


def profiler(folder: Path | None, name: str, pid: int | None) -> subprocess.Popen[bytes] | None:
    """py-spy sampling the server (every thread, 250 Hz) until sent SIGINT."""
    if folder is None or pid is None:
        return None
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    folder.mkdir(parents=True, exist_ok=True)
    command = [spy, "record", "--pid", str(pid), "--rate", "250", "--format", "raw"]
    command += ["--nonblocking", "-o", str(folder / f"{name}.txt")]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)  # attached before the first request
    return proc


def hottest(paths: list[Path], top: int = 25) -> None:
    """The functions the samples were in (self) and under (total), over every file."""
    own: collections.Counter[str] = collections.Counter()
    under: collections.Counter[str] = collections.Counter()
    samples = 0
    for path in paths:
        for line in path.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not stack or not count.isdigit():
                continue
            frames = [_short(f) for f in stack.split(";") if not f.startswith("process ")]
            frames = [f for f in frames if not f.startswith("thread ")]
            if not frames:
                continue
            n = int(count)
            samples += n
            own[frames[-1]] += n
            for frame in set(frames):
                under[frame] += n
    if not samples:
        print("  profile: no samples")
        return
    print(f"\n  profile: {samples} samples over {len(paths)} runs (self %, then total %)")
    for frame, n in own.most_common(top):
        print(f"    self  {100 * n / samples:5.1f} %  {frame}")
    for frame, n in under.most_common(top):
        print(f"    total {100 * n / samples:5.1f} %  {frame}")


def _short(frame: str) -> str:
    """`fn (path/to/module.py:12)` -> `fn (module.py)`."""
    found = re.match(r"(.*) \((?:.*/)?([^/:]+)(?::\d+)?\)$", frame.strip())
    return f"{found[1]} ({found[2]})" if found else frame.strip()


if __name__ == "__main__":
    main()
