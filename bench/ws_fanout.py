"""WebSocket fan-out: many clients subscribed to "*" while many tasks report progress.

For each scenario it runs two servers, one after the other, under the same load:
- ours: `create_app(settings)` in its own process; M tasks' progress (4 Hz each) is
  published through the real EventBus of that process by a producer added for the bench
  (no downloads: 100 real transfers would measure the downloader, not the fan-out);
- bare: a minimal aiohttp broadcast server in its own process, with the same producer and
  the same event JSON, sending every event (or, in batch mode, one joined batch per
  interval) to every socket: the floor any fan-out in aiohttp can reach.
N clients connect over loopback from a few client processes, subscribe to "*" (batch mode:
`configure` with batch_ms first), and count frames and events in a measured window after a
warm-up; one client in OBSERVE_EVERY parses every frame and measures publish → receipt
latency from each event's `timestamp` (millisecond precision, same clock).

Printed per run: delivered events/s (and the share of what was published), frames/s,
p50/p99 latency, the server's peak RSS in the window; then ours/bare ratios. When readers
fall behind, ours leaves out superseded progress (newest per task is kept, and it says how
many it left out) while the bare server delivers everything, later and later.

    python bench/ws_fanout.py                       # batch N=1000 and plain N=100
    python bench/ws_fanout.py --clients 200 --tasks 50 --duration 5
    WS_FANOUT_PROFILE=/tmp/ours.prof python bench/ws_fanout.py   # cProfile of our server

On a 2-core machine the clients and the server share the CPUs, so large N mostly measures
how fast Python clients can read; the ratio against the bare server is the meaningful
figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp
from aiohttp import web

from progress_server.models import Event, EventName, Progress, TaskState
from tests.serverproc import create_key, free_port

OBSERVE_EVERY = 20
SLICES_PER_PERIOD = 25
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# -- the load: M tasks, progress at HZ each ------------------------------------------------


def _progress_body(n: int, tick: int) -> tuple[dict[str, Any], Progress]:
    total = 100 * 1024 * 1024
    done = min(total, (tick * 262_144 + n * 4096) % total)
    progress = Progress(done, total, 2_500_000.0)
    return {"progress": progress.to_wire()}, progress


async def produce(
    tasks: int, hz: float, publish: Callable[[str, dict[str, Any], Progress], Any]
) -> None:
    """Publish one progress event per task per 1/hz s, spread evenly over the period."""
    ids = [str(uuid.UUID(int=n + 1)) for n in range(tasks)]
    loop = asyncio.get_running_loop()
    step = 1 / hz / SLICES_PER_PERIOD
    start = loop.time()
    k = 0
    while True:
        # Publish every slice that is due in one go: a producer that fell behind (a busy
        # loop) catches up at once instead of one slice per turn of the loop.
        due = int((loop.time() - start) / step) + 1
        while k < due:
            tick, part = divmod(k, SLICES_PER_PERIOD)
            for n in range(part, tasks, SLICES_PER_PERIOD):
                body, progress = _progress_body(n, tick)
                result = publish(ids[n], body, progress)
                if asyncio.iscoroutine(result):
                    await result
            k += 1
        await asyncio.sleep(max(0.0, start + k * step - loop.time()))


# -- server processes ----------------------------------------------------------------------


def serve_ours(args: argparse.Namespace) -> None:
    from progress_server.app import create_app
    from progress_server.appkeys import BUS
    from progress_server.settings import Settings

    settings = Settings(data_dir=Path(args.data_dir), host="127.0.0.1", port=args.port)
    app = create_app(settings)

    async def producer(app: web.Application) -> AsyncIterator[None]:
        bus = app[BUS]

        async def publish(task_id: str, body: dict[str, Any], progress: Progress) -> None:
            await bus.publish(
                EventName.PROGRESS, task_id, 1, TaskState.DOWNLOADING, body, progress=progress
            )

        job = asyncio.create_task(produce(args.tasks, args.hz, publish))
        yield
        job.cancel()

    app.cleanup_ctx.append(producer)
    profile_to = os.environ.get("WS_FANOUT_PROFILE")
    if profile_to:
        import cProfile

        cProfile.runctx(
            "web.run_app(app, host='127.0.0.1', port=args.port, print=None, access_log=None)",
            globals(),
            {"app": app, "args": args, "web": web},
            profile_to,
        )
        return
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, access_log=None)


def serve_bare(args: argparse.Namespace) -> None:
    sockets: set[web.WebSocketResponse] = set()
    batch_ms = args.batch_ms
    pending: list[bytes] = []
    seq = 0

    async def ws_handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(compress=False)
        await ws.prepare(request)
        async for msg in ws:
            if msg.type is aiohttp.WSMsgType.TEXT and "subscribe" in msg.data:
                sockets.add(ws)
        sockets.discard(ws)
        return ws

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def send_all(data: bytes) -> None:
        for ws in list(sockets):
            try:
                await ws.send_frame(data, aiohttp.WSMsgType.TEXT)
            except ConnectionError:
                sockets.discard(ws)

    async def publish(task_id: str, body: dict[str, Any], progress: Progress) -> None:
        nonlocal seq
        seq += 1
        event = Event(seq, EventName.PROGRESS, task_id, 1, TaskState.DOWNLOADING, time.time(), body)
        data = json.dumps(event.to_wire()).encode()
        if batch_ms:
            pending.append(data)
        else:
            await send_all(data)

    async def flusher() -> None:
        while True:
            await asyncio.sleep(batch_ms / 1000)
            if pending:
                frame = b'{"event": "batch", "events": [' + b", ".join(pending) + b"]}"
                pending.clear()
                await send_all(frame)

    async def background(app: web.Application) -> AsyncIterator[None]:
        jobs = [asyncio.create_task(produce(args.tasks, args.hz, publish))]
        if batch_ms:
            jobs.append(asyncio.create_task(flusher()))
        yield
        for job in jobs:
            job.cancel()

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/api/progress/ws", ws_handler)
    app.cleanup_ctx.append(background)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, access_log=None)


# -- client processes ------------------------------------------------------------------------


def _epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp[:-1] + "+00:00").timestamp()


async def run_clients(args: argparse.Namespace) -> dict[str, Any]:
    window_start = args.start_at + args.warmup
    window_end = window_start + args.duration
    frames = 0
    events = 0
    latencies: list[float] = []
    connected = 0
    headers = {"Authorization": f"Bearer {args.key}"} if args.key else {}
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def client(index: int) -> None:
            nonlocal frames, events, connected
            observe = (index + args.offset) % OBSERVE_EVERY == 0
            ws = await session.ws_connect(args.url, headers=headers, max_msg_size=0)
            if args.batch_ms:
                await ws.send_json({"action": "configure", "batch_ms": args.batch_ms})
            await ws.send_json({"action": "subscribe", "task_id": "*"})
            connected += 1
            try:
                while True:
                    left = window_end - time.time()
                    if left <= 0:
                        return
                    try:
                        msg = await ws.receive(timeout=left)
                    except TimeoutError:
                        return
                    if msg.type is not aiohttp.WSMsgType.TEXT:
                        return
                    now = time.time()
                    if now < window_start:
                        continue
                    frames += 1
                    text: str = msg.data
                    if not observe:
                        events += text.count('"seq"')
                        continue
                    parsed = json.loads(text)
                    inner = parsed["events"] if parsed.get("event") == "batch" else [parsed]
                    for event in inner:
                        if event.get("event") == "download.progress":
                            events += 1
                            latencies.append((now - _epoch(event["timestamp"])) * 1000)
            finally:
                await ws.close()

        # Connect in waves, so the server's accept queue is not the bottleneck measured.
        jobs = []
        for index in range(args.count):
            jobs.append(asyncio.create_task(client(index)))
            if index % 50 == 49:
                await asyncio.sleep(0.05)
        results = await asyncio.gather(*jobs, return_exceptions=True)
    failed = [repr(r) for r in results if isinstance(r, BaseException)]
    return {
        "frames": frames,
        "events": events,
        "latencies": latencies,
        "connected": connected,
        "failed": failed[:3],
        "failures": len(failed),
    }


# -- orchestration ---------------------------------------------------------------------------


@dataclass
class Result:
    server: str
    mode: str
    clients: int
    events_per_s: float
    expected_per_s: float
    frames_per_s: float
    p50_ms: float
    p99_ms: float
    rss_mb: float
    failures: int
    superseded: int


def _superseded(port: int, key: str) -> int:
    """Progress frames the server left out for late readers (its /metrics counter)."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/metrics", headers={"Authorization": f"Bearer {key}"}
    )
    with _NO_PROXY.open(request, timeout=10) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith("progress_server_websocket_frames_dropped_total"):
                return int(float(line.split()[-1]))
    return 0


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with _NO_PROXY.open(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise TimeoutError(url)


def run_scenario(
    server: str, mode: str, clients: int, args: argparse.Namespace, key: str, data_dir: Path
) -> Result:
    port = free_port()
    batch_ms = args.batch_ms if mode == "batch" else 0
    me = [sys.executable, str(Path(__file__).resolve())]
    serve = [f"serve-{server}", "--port", str(port), "--tasks", str(args.tasks)]
    serve += ["--hz", str(args.hz), "--batch-ms", str(batch_ms), "--data-dir", str(data_dir)]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(me + serve, env=env, stdout=subprocess.DEVNULL)
    try:
        _wait_healthy(f"http://127.0.0.1:{port}/healthz", proc)
        workers = min(args.client_procs, clients)
        # Client processes need a moment to start, then a moment per wave of connections.
        start_at = time.time() + args.connect_time + clients / 250
        kids = []
        for w in range(workers):
            count = clients // workers + (1 if w < clients % workers else 0)
            cmd = [*me, "clients", "--url", f"ws://127.0.0.1:{port}/api/progress/ws"]
            cmd += ["--count", str(count), "--offset", str(w), "--start-at", str(start_at)]
            cmd += ["--warmup", str(args.warmup), "--duration", str(args.duration)]
            cmd += ["--batch-ms", str(batch_ms), "--key", key if server == "ours" else ""]
            cmd += ["--report", str(data_dir / f"report-{w}.json")]
            kids.append(subprocess.Popen(cmd, env=env))
        rss = 0.0
        while any(k.poll() is None for k in kids):
            if time.time() > start_at + args.warmup:
                rss = max(rss, _rss_mb(proc.pid))
            time.sleep(0.5)
        reports = [json.loads((data_dir / f"report-{w}.json").read_text()) for w in range(workers)]
        dropped = _superseded(port, key) if server == "ours" else 0
    finally:
        proc.terminate()
        proc.wait(30)
    latencies = sorted(x for r in reports for x in r["latencies"])
    failures = sum(r["failures"] for r in reports)
    for r in reports:
        for failure in r["failed"]:
            print(f"  client failure ({server}): {failure}", file=sys.stderr)

    def pct(p: float) -> float:
        if not latencies:
            return float("nan")
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))]

    return Result(
        server=server,
        mode=f"{mode} {batch_ms} ms" if batch_ms else mode,
        clients=clients,
        events_per_s=sum(r["events"] for r in reports) / args.duration,
        expected_per_s=clients * args.tasks * args.hz,
        frames_per_s=sum(r["frames"] for r in reports) / args.duration,
        p50_ms=statistics.median(latencies) if latencies else float("nan"),
        p99_ms=pct(0.99),
        rss_mb=rss,
        failures=failures,
        superseded=dropped,
    )


def _row(r: Result) -> str:
    share = r.events_per_s / r.expected_per_s if r.expected_per_s else 0
    return (
        f"{r.mode:<13} {r.clients:>7} {r.server:<5} {r.events_per_s:>11,.0f} {share:>6.0%} "
        f"{r.frames_per_s:>10,.0f} {r.p50_ms:>7.1f} {r.p99_ms:>8.1f} {r.rss_mb:>7.1f}"
        + (f"  ({r.failures} clients failed)" if r.failures else "")
        + (f"  ({r.superseded:,} superseded progress frames left out)" if r.superseded else "")
    )


def main(args: argparse.Namespace) -> None:
    print(
        f"ws_fanout: {args.tasks} tasks x {args.hz:g} Hz progress, published through the real "
        "EventBus inside the server process (no downloads); bare = minimal aiohttp broadcast "
        f"server, same producer; {args.client_procs} client processes over loopback; "
        f"{args.warmup:g} s warm-up, {args.duration:g} s window; {os.cpu_count()} CPUs"
    )
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        key = create_key(data_dir, "bench", admin=True)
        print(
            f"{'mode':<13} {'clients':>7} {'srv':<5} {'events/s':>11} {'of pub':>6} "
            f"{'frames/s':>10} {'p50 ms':>7} {'p99 ms':>8} {'RSS MB':>7}"
        )
        scenarios = [("batch", args.clients), ("plain", args.plain_clients)]
        for mode, clients in scenarios:
            if clients <= 0:
                continue
            pair = {}
            for server in ("ours", "bare"):
                pair[server] = run_scenario(server, mode, clients, args, key, data_dir)
                print(_row(pair[server]), flush=True)
            ours, bare = pair["ours"], pair["bare"]
            print(
                f"  ratio ours/bare ({mode}): frames/s {ours.frames_per_s / bare.frames_per_s:.2f}"
                f", events/s {ours.events_per_s / bare.events_per_s:.2f}"
                f", p99 {ours.p99_ms:.0f} vs {bare.p99_ms:.0f} ms",
                flush=True,
            )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command")
    for name in ("serve-ours", "serve-bare"):
        serve = sub.add_parser(name)
        serve.add_argument("--port", type=int, required=True)
        serve.add_argument("--tasks", type=int, required=True)
        serve.add_argument("--hz", type=float, required=True)
        serve.add_argument("--batch-ms", type=int, default=0)
        serve.add_argument("--data-dir", required=True)
    clients = sub.add_parser("clients")
    clients.add_argument("--url", required=True)
    clients.add_argument("--count", type=int, required=True)
    clients.add_argument("--offset", type=int, default=0)
    clients.add_argument("--start-at", type=float, required=True)
    clients.add_argument("--warmup", type=float, required=True)
    clients.add_argument("--duration", type=float, required=True)
    clients.add_argument("--batch-ms", type=int, default=0)
    clients.add_argument("--key", default="")
    clients.add_argument("--report", required=True)
    parser.add_argument("--clients", type=int, default=1000, help="batch-mode clients")
    parser.add_argument("--plain-clients", type=int, default=100, help="plain-mode clients")
    parser.add_argument("--tasks", type=int, default=100)
    parser.add_argument("--hz", type=float, default=4.0)
    parser.add_argument("--batch-ms", type=int, default=50)
    parser.add_argument("--client-procs", type=int, default=2)
    parser.add_argument("--connect-time", type=float, default=4.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--duration", type=float, default=8.0)
    return parser


if __name__ == "__main__":
    parsed = _parser().parse_args()
    if parsed.command == "serve-ours":
        serve_ours(parsed)
    elif parsed.command == "serve-bare":
        serve_bare(parsed)
    elif parsed.command == "clients":
        report = asyncio.run(run_clients(parsed))
        Path(parsed.report).write_text(json.dumps(report))
    else:
        main(parsed)
