"""Throughput: progress-server against curl and aria2c, on one big file and many small ones.

The origin is nginx when Debian's nginx is installed, else an aiohttp static-file server
(sendfile) in its own process; the script says which. It serves a 1 GiB file and 100 files
of 1 MiB generated into a temp dir. In the same run, in interleaved rounds, it times:

    big file    curl;  aria2c with one connection;  curl followed by an fsync of its file;
                progress-server
    100 small   curl --parallel (16);  aria2c -j 16;  progress-server, 16 at once

progress-server runs as a subprocess (`serve`, a fresh temp data dir each round) and is
timed twice: the transfer alone (first `download.started` to last `download.processing`
by its own event clock: bytes on disk, sha256 of every byte, fsync) and submit ->
`completed` (post-processing such as the media probe included). curl and aria2c neither
hash nor fsync; "curl, then fsync" shows what durability costs on this disk.
Printed: medians and every run, throughput ratios, the server's RSS before/after and
peak (VmHWM from /proc), and its worst event-loop lag (from /metrics, or its shutdown
log line).

    python bench/throughput.py                            # 1 GiB + 100 x 1 MiB, 3 rounds
    python bench/throughput.py --big-mb 256 --rounds 2    # quicker
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.serverproc import ServerProcess, create_key, free_port

MiB = 1024 * 1024
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
        return self

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
        ids = [self.call("POST", "/api/downloads", {"url": u})["task_id"] for u in urls]
        # Only unfinished tasks are listed, every 50 ms: polling must not be what loads the
        # server's loop (a 100-task listing every 20 ms would).
        unfinished = "/api/downloads?state=pending,downloading,processing,paused&limit=500"
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
    parser.add_argument("--big-mb", type=int, default=1024, help="size of the big file (MiB)")
    parser.add_argument("--small", type=int, default=100, help="number of 1 MiB files")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each, interleaved")
    parser.add_argument("--serve", nargs=2, metavar=("ROOT", "PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve_static(args.serve[0], int(args.serve[1]))
        return
    for tool in ("curl", "aria2c"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is not installed (Debian: apt-get install curl aria2)")

    with tempfile.TemporaryDirectory(prefix="ps-bench-") as tmp:
        work = Path(tmp)
        # nginx workers run as another user: they must be able to read the files.
        work.chmod(0o755)
        root = work / "www"
        root.mkdir(mode=0o755)
        make_files(root, args.big_mb, args.small)
        # Read once so every contender gets the origin's file from the page cache.
        with open(root / "big.bin", "rb") as f:
            while f.read(16 * MiB):
                pass
        with StaticOrigin(root, work) as origin:
            print(f"origin: {origin.kind} on 127.0.0.1:{origin.port}")
            print(
                f"files:  1 x {args.big_mb} MiB, {args.small} x 1 MiB;"
                f" {os.cpu_count()} CPUs; {args.rounds} rounds"
            )
            run(args, work, origin)


def run(args: argparse.Namespace, work: Path, origin: StaticOrigin) -> None:
    out = work / "out"
    big_url = origin.url("big.bin")
    urls = [origin.url(f"small/{i}.bin") for i in range(args.small)]
    listing = work / "urls.txt"
    listing.write_text("\n".join(urls) + "\n")
    curl_many = ["curl", "-sf", "--parallel", "--parallel-max", "16"]
    for i, u in enumerate(urls):
        curl_many += ["-o", f"{i}.bin", u]
    aria = ["aria2c", "-q", "--file-allocation=none", "--allow-overwrite=true"]
    big, small = args.big_mb * MiB, args.small * MiB
    big_rows = [
        Row("curl", [], big),
        Row("aria2c -x1 (one connection)", [], big),
        Row("curl, then fsync of its file", [], big),
        Row("progress-server, transfer only", [], big),
        Row("progress-server, submit->completed", [], big),
    ]
    small_rows = [
        Row("curl --parallel-max 16", [], small),
        Row("aria2c -j 16", [], small),
        Row("progress-server, transfer only", [], small),
        Row("progress-server, submit->completed", [], small),
    ]

    peaks: list[int] = []
    rss: list[tuple[int, int]] = []
    lags: dict[str, list[float]] = {"big": [], "small": []}
    for i in range(args.rounds):
        big_rows[0].runs.append(
            timed(lambda: sh("curl", "-sf", "-o", str(fresh(out) / "b"), big_url))
        )
        big_rows[1].runs.append(
            timed(lambda: sh(*aria, "-x1", "-s1", "-d", str(fresh(out)), big_url))
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
        lags["big"].append(lag if lag is not None else server.worst_lag_ms() or float("nan"))
        big_rows[3].runs.append(transfer)
        big_rows[4].runs.append(total)
        rss.append((before, after))
        peaks.append(peak)
        shutil.rmtree(work / f"server-big-{i}", ignore_errors=True)

    small_args = ("--max-concurrent", "16", "--max-per-host", "16")
    for i in range(args.rounds):
        small_rows[0].runs.append(timed(lambda: sh(*curl_many, cwd=fresh(out))))
        small_rows[1].runs.append(
            timed(lambda: sh(*aria, "-j", "16", "-d", str(fresh(out)), "-i", str(listing)))
        )
        shutil.rmtree(out, ignore_errors=True)
        os.sync()
        with Server(work / f"server-small-{i}", *small_args) as server:
            total, transfer = server.download_all(urls)
            _, peak = server.memory()
            lag = server.worst_lag_ms()
        lags["small"].append(lag if lag is not None else server.worst_lag_ms() or float("nan"))
        small_rows[2].runs.append(transfer)
        small_rows[3].runs.append(total)
        peaks.append(peak)
        shutil.rmtree(work / f"server-small-{i}", ignore_errors=True)

    report(f"big file ({args.big_mb} MiB)", big_rows, baselines=3)
    report(f"{args.small} files of 1 MiB", small_rows)
    print("\ngoals (transfer only / submit->completed):")
    print(
        f"  big file: {big_rows[0].seconds / big_rows[3].seconds:.2f} /"
        f" {big_rows[0].seconds / big_rows[4].seconds:.2f} of curl's throughput (goal >= 0.95);"
        f" {big_rows[2].seconds / big_rows[3].seconds:.2f} /"
        f" {big_rows[2].seconds / big_rows[4].seconds:.2f} of curl's with its file fsynced"
    )
    print(
        f"  small files: {small_rows[1].seconds / small_rows[2].seconds:.2f} /"
        f" {small_rows[1].seconds / small_rows[3].seconds:.2f} of aria2c -j 16's (goal >= 1.0)"
    )
    rss_text = ", ".join(f"{b / MiB:.0f}->{a / MiB:.0f}" for b, a in rss)
    print(f"  server RSS before->after each big download: {rss_text} MiB")
    print(f"  server peak RSS (VmHWM) per run: {', '.join(f'{p / MiB:.0f}' for p in peaks)} MiB")
    for kind, values in lags.items():
        shown = ", ".join(f"{v:.1f}" for v in values)
        print(f"  worst event-loop lag per {kind}-file run: {shown} ms (goal < 50)")


if __name__ == "__main__":
    main()
