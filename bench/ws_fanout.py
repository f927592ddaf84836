"""WebSocket fan-out under real load (#15): how far apart do clients hear each lifecycle event?

What runs, on the same cores, for each client count (500 and 1,000 by default):
- ours: one `progress-server serve` process running 20 REAL downloads at once (each from a
  local origin throttled to 2 MB/s, topped up as they finish, so 20 always run) while N
  clients are subscribed to `*` in batch mode (`configure` with `batch_ms` 250).
- bare: a second `progress-server` runs the same 20 downloads with no client sockets, and a
  bare aiohttp broadcaster (one asyncio.Queue and one sender task per client, the simplest
  correct broadcaster) relays its events to the same N clients: it reads them from one
  plain socket to that server, joins what arrived every `batch_ms` into one batch frame and
  puts it in every client's queue. This is the floor: the fan-out alone, with the download
  work on another process.

For every lifecycle event (everything the server persists in its history: queued, started,
processing, completed, ...) the spread is the time between the first and the last of the N
clients receiving it; the bench prints its p50/p99/max, and checks that every lifecycle
event of the run reached every client. The origin runs in a thread of this process; the
downloads are submitted over the HTTP API, keeping a few tasks pending so that 20 run.

Clients: N sockets spread over a few client processes (`--client-procs`, aiohttp client,
one event loop each). Per frame a client only takes the time and runs one regular
expression over the text (no JSON parsing), so it costs a few microseconds, and its
garbage collector is off while measuring (a collection in the middle of one batch would
count as spread); the bench prints the client processes' CPU use during the window, so
one can see they kept up (a client process near 100 % of a core would make every spread
look worse, for both servers alike). Receipt times use `time.time()`, the one system
clock shared by all processes.

RSS per idle socket: a fresh server with no downloads, RSS before and after opening
`--idle-sockets` sockets (each authenticated by its header and subscribed to `*`), after a
moment to settle; the bare broadcaster's figure is printed next to it.

    python bench/ws_fanout.py                              # 500 and 1,000 clients
    python bench/ws_fanout.py --clients 500 --seconds 10   # quicker
    python bench/ws_fanout.py --profile /tmp/prof          # py-spy on both fan-out processes

`--profile DIR` records each fan-out process during the window with
`py-spy record --idle --gil --format raw` (collapsed stacks) and prints where its samples
went (downloads, fan-out, SQLite, ...) and its top frames by self time; the raw files feed
any flame graph tool. `--profile-format flamegraph` (or `speedscope`) writes py-spy's SVG
(or JSON) instead, without the printed summary.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp
from aiohttp import web

from bench.soak import OriginThread
from tests.origins import Origin
from tests.serverproc import ServerProcess, create_key, free_port

# One event's name and its seq: seq is the second-to-last key of every event on the wire,
# and no body holds an "event" key, so a lazy match pairs each name with its own seq.
EVENT_SEQ = re.compile(r'"event": "(download\.[a-z]+)".*?"seq": (\d+)', re.S)
PROGRESS = "download.progress"
MIB = 1024 * 1024
WS_PATH = "/api/progress/ws"


# -- client processes --------------------------------------------------------------------------


async def run_clients(args: argparse.Namespace) -> dict[str, Any]:
    """Open `count` sockets, print "ready" once all are subscribed, record every non-progress
    event's first and last receipt (and how many sockets got it) until stdin says stop."""
    first: dict[int, float] = {}
    last: dict[int, float] = {}
    got: Counter[int] = Counter()
    closes: Counter[str] = Counter()
    frames = 0
    ready = asyncio.Event()
    subscribed = 0
    headers = {"Authorization": f"Bearer {args.key}"}
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def client() -> None:
            nonlocal frames, subscribed
            ws = await session.ws_connect(args.url, headers=headers, max_msg_size=0)
            await ws.send_str(json.dumps({"action": "configure", "batch_ms": args.batch_ms}))
            await ws.send_str(json.dumps({"action": "subscribe", "task_id": "*"}))
            while True:
                msg = await ws.receive()
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    raise RuntimeError(f"closed before subscribing: {msg}")
                if '"subscribed"' in msg.data:
                    break
            subscribed += 1
            if subscribed == args.count:
                ready.set()
            while True:
                msg = await ws.receive()
                now = time.time()
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    closes[f"{msg.type.name} {ws.close_code}"] += 1
                    return
                frames += 1
                for name, seq_text in EVENT_SEQ.findall(msg.data):
                    if name == PROGRESS:
                        continue
                    seq = int(seq_text)
                    got[seq] += 1
                    if seq not in first:
                        first[seq] = now
                    last[seq] = now

        jobs: list[asyncio.Task[None]] = []
        for index in range(args.count):
            jobs.append(asyncio.create_task(client()))
            if index % 50 == 49:
                await asyncio.sleep(0.05)
        waiting = asyncio.ensure_future(ready.wait())
        await asyncio.wait([waiting, *jobs], return_when=asyncio.FIRST_COMPLETED)
        failed = [job for job in jobs if job.done() and job.exception() is not None]
        if failed:
            raise RuntimeError(f"{len(failed)} clients failed: {failed[0].exception()!r}")
        # A client process that stops for a garbage collection in the middle of reading
        # one batch on its sockets would add the pause to that batch's spread: the
        # sockets are all open now, so keep what exists out of collections, and collect
        # nothing more while measuring (what a client allocates per frame is freed by
        # reference counting).
        gc.collect()
        gc.freeze()
        gc.disable()
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        for job in jobs:
            job.cancel()
        await asyncio.gather(*jobs, return_exceptions=True)
    return {
        "first": first,
        "last": last,
        "got": dict(got),
        "frames": frames,
        "closes": dict(closes),
    }


# -- the bare broadcaster -----------------------------------------------------------------------


def serve_bare(args: argparse.Namespace) -> None:
    """One queue and one sender task per client; one batch frame per batch_ms for all."""
    queues: set[asyncio.Queue[bytes]] = set()
    pending: list[bytes] = []

    async def ws_handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(compress=False)
        await ws.prepare(request)
        queue: asyncio.Queue[bytes] = asyncio.Queue()

        async def sender() -> None:
            while True:
                await ws.send_frame(await queue.get(), aiohttp.WSMsgType.TEXT)

        job = asyncio.create_task(sender())
        try:
            async for msg in ws:
                if msg.type is aiohttp.WSMsgType.TEXT and '"subscribe"' in msg.data:
                    queues.add(queue)
                    await ws.send_str('{"event": "subscribed", "task_id": "*"}')
        finally:
            queues.discard(queue)
            job.cancel()
        return ws

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def relay() -> None:
        headers = {"Authorization": f"Bearer {args.key}"}
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(args.upstream, headers=headers, max_msg_size=0) as up:
                await up.send_str(json.dumps({"action": "subscribe", "task_id": "*"}))
                async for msg in up:
                    if msg.type is aiohttp.WSMsgType.TEXT and '"download.' in msg.data:
                        pending.append(msg.data.encode())

    async def flusher() -> None:
        step = args.batch_ms / 1000
        while True:
            await asyncio.sleep(step)
            if pending:
                frame = b'{"event": "batch", "events": [' + b", ".join(pending) + b"]}"
                pending.clear()
                for queue in queues:
                    queue.put_nowait(frame)

    async def background(app: web.Application) -> AsyncIterator[None]:
        jobs = [asyncio.create_task(relay()), asyncio.create_task(flusher())]
        yield
        for job in jobs:
            job.cancel()

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get(WS_PATH, ws_handler)
    app.cleanup_ctx.append(background)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, access_log=None)


# -- measuring ----------------------------------------------------------------------------------


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Run:
    server: str
    clients: int
    spreads_ms: list[float] = field(default_factory=list)
    lifecycle_events: int = 0
    missing: int = 0  # (event, client) pairs never received
    downloads: int = 0
    frames: int = 0
    closes: dict[str, int] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    profile: str = ""

    def row(self) -> str:
        p50, p99 = quantile(self.spreads_ms, 0.5), quantile(self.spreads_ms, 0.99)
        worst = max(self.spreads_ms, default=float("nan"))
        cpu = ", ".join(f"{k} {v:.0%}" for k, v in self.cpu.items())
        closed = f"; closed: {self.closes}" if self.closes else ""
        return (
            f"{self.server:<6} {self.clients:>6} {p50:>9.1f} {p99:>9.1f} {worst:>9.1f}  "
            f"{self.lifecycle_events:>5} events, {self.missing} missed, "
            f"{self.downloads} downloads, {self.frames / self.seconds:,.0f} frames/s; "
            f"CPU {cpu}{closed}"
        )


class Api:
    def __init__(self, session: aiohttp.ClientSession, base_url: str, key: str) -> None:
        self.session = session
        self.base_url = base_url
        self.headers = {"Authorization": f"Bearer {key}"}

    async def get(self, path: str) -> Any:
        async with self.session.get(self.base_url + path, headers=self.headers) as resp:
            resp.raise_for_status()
            return await resp.json()

    async def submit(self, url: str) -> None:
        body = {"url": url}
        async with self.session.post(
            self.base_url + "/api/downloads", json=body, headers=self.headers
        ) as resp:
            resp.raise_for_status()

    async def unfinished(self, states: str) -> int:
        found = await self.get(f"/api/downloads?state={states}&limit=500")
        return len(found["tasks"])

    async def lifecycle(self) -> dict[int, str]:
        events: dict[int, str] = {}
        after = 0
        while True:
            page = (await self.get(f"/api/events?after_seq={after}&limit=5000"))["events"]
            if not page:
                return events
            for event in page:
                if event["event"] != PROGRESS:
                    events[event["seq"]] = event["event"]
            after = page[-1]["seq"]


async def pump_downloads(api: Api, origin: Origin, args: argparse.Namespace) -> int:
    """Keep `--downloads` transfers running for `--seconds` (a few always pending), then wait
    for every one to finish."""
    submitted = 0
    deadline = time.monotonic() + args.seconds
    while time.monotonic() < deadline:
        pending = await api.unfinished("pending")
        for _ in range(max(0, (args.downloads if submitted == 0 else 4) - pending)):
            await api.submit(origin.url(size=args.size, rate=args.rate, seed=submitted))
            submitted += 1
        await asyncio.sleep(0.2)
    finish_by = time.monotonic() + 120
    while await api.unfinished("pending,downloading,processing"):
        if time.monotonic() > finish_by:
            raise TimeoutError("downloads did not finish within 120 s")
        await asyncio.sleep(0.2)
    return submitted


async def start_clients(
    url: str, key: str, total: int, args: argparse.Namespace, reports: Path
) -> list[asyncio.subprocess.Process]:
    procs = []
    workers = min(args.client_procs, total)
    for w in range(workers):
        count = total // workers + (1 if w < total % workers else 0)
        cmd = [sys.executable, str(Path(__file__).resolve()), "clients", "--url", url]
        cmd += ["--count", str(count), "--key", key, "--batch-ms", str(args.batch_ms)]
        cmd += ["--report", str(reports / f"clients-{w}.json")]
        procs.append(
            await asyncio.create_subprocess_exec(
                *cmd,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )
        )
    for proc in procs:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 120)
        if line.strip() != b"ready":
            raise RuntimeError(f"a client process did not get ready: {line!r}")
    return procs


async def start_py_spy(
    pid: int, out: Path, seconds: float, form: str
) -> asyncio.subprocess.Process:
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    cmd = [py_spy, "record", "--pid", str(pid), "--idle", "--gil", "--format", form]
    cmd += ["--duration", str(int(seconds)), "--rate", "200", "-o", str(out)]
    return await asyncio.create_subprocess_exec(
        *cmd, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )


# Where the fan-out process spends its samples: the first rule that matches a stack names it.
# A stack is one sample's call chain, outermost first; "fan-out" comes first so that the
# publisher's call into the hub counts as fan-out, not as the download that published.
CATEGORIES = [
    (
        "fan-out (progress_server/fanout.py, listener, outbox)",
        r"progress_server/(fanout|listener|outbox|replay|wsframes)",
    ),
    ("bare broadcaster (queues, sender tasks)", r"serve_bare"),
    ("WebSocket receive loop (web/ws.py)", r"progress_server/web/ws\.py"),
    (
        "downloads (scheduler, downloader, part file, events)",
        r"progress_server/(scheduler|downloader|partfile|throttle|tracker|events|runner)",
    ),
    ("SQLite (aiosqlite thread, store)", r"aiosqlite|progress_server/store"),
    ("HTTP API requests (the bench's submits and polls)", r"web_protocol|progress_server/web/"),
    ("socket reads (transport read callbacks)", r"_read_ready|data_received"),
    ("event loop itself (select, scheduling)", r""),
]
FAN_OUT_PARTS = [
    (
        "socket writes (aiohttp writer, transport.write)",
        r"_websocket/writer|Transport\.write|sock_send|send_frame",
    ),
    ("JSON encoding", r"json/|encode"),
    ("task wake-ups and futures (asyncio)", r"asyncio/"),
    ("the fan-out's own code", r""),
]


def top_frames(raw: Path, count: int = 10) -> str:
    """Where the samples went (by category), then the frames that hold the most samples
    by self time."""
    own: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    parts: Counter[str] = Counter()
    samples = 0
    for line in raw.read_text().splitlines():
        stack, _, n_text = line.rpartition(" ")
        n = int(n_text)
        frames = [_short(f) for f in stack.split(";")]
        samples += n
        own[frames[-1]] += n
        kind = next(name for name, rule in CATEGORIES if re.search(rule, stack))
        kinds[kind] += n
        if kind.startswith("fan-out"):
            leaf = frames[-1]
            parts[next(name for name, rule in FAN_OUT_PARTS if re.search(rule, leaf))] += n
    lines = [f"    {samples} samples holding the GIL; by category:"]
    lines += [f"      {n / samples:6.1%}  {k}" for k, n in kinds.most_common()]
    if parts:
        lines.append("    fan-out by its leaf frame:")
        lines += [f"      {n / samples:6.1%}  {k}" for k, n in parts.most_common()]
    lines.append("    top frames by self time:")
    lines += [f"      {n / samples:6.1%}  {f}" for f, n in own.most_common(count)]
    return "\n".join(lines)


def _short(frame: str) -> str:
    # "send_frame (aiohttp/_websocket/writer.py:84)" without the site-packages prefix.
    frame = re.sub(r"\(/\S+?/(site-packages|lib/python3\.\d+|progress_server)/", r"(\1/", frame)
    return re.sub(r":\d+\)$", ")", frame)


class TreeServer(ServerProcess):
    """progress-server from another checkout (`--before-tree`), the same way."""

    def __init__(self, tree: str, data_dir: Path, *extra_args: str) -> None:
        super().__init__(data_dir, *extra_args)
        self.tree = str(Path(tree).resolve())

    def command(self) -> list[str]:
        command = super().command()
        at = command.index("-m")
        run = "import runpy, sys; sys.argv[0] = 'progress-server'; "
        run += f"sys.path.insert(0, {self.tree!r}); "
        run += "runpy.run_module('progress_server', run_name='__main__', alter_sys=True)"
        return [*command[:at], "-c", run, *command[at + 2 :]]


async def run_once(
    server_kind: str, clients: int, args: argparse.Namespace, work: Path, origin: Origin
) -> Run:
    name = f"{server_kind}-{clients}"
    rounds = sum(1 for _ in work.glob(f"{name}-*"))
    name += f"-{rounds + 1}"
    data = work / name
    key = create_key(data, "bench", admin=True)
    limits = ["--max-concurrent", str(args.downloads), "--max-per-host", str(args.downloads)]
    if server_kind == "before":
        server: ServerProcess = TreeServer(args.before_tree, data, "--loopback-only", *limits)
    else:
        server = ServerProcess(data, "--loopback-only", *limits)
    run = Run(server_kind, clients)
    bare: asyncio.subprocess.Process | None = None
    procs: list[asyncio.subprocess.Process] = []
    with server:
        assert server.pid is not None
        fan_url, fan_pid = server.ws_url, server.pid
        try:
            if server_kind == "bare":
                port = free_port()
                cmd = [sys.executable, str(Path(__file__).resolve()), "serve-bare"]
                cmd += ["--port", str(port), "--upstream", server.ws_url, "--key", key]
                cmd += ["--batch-ms", str(args.batch_ms)]
                bare = await asyncio.create_subprocess_exec(*cmd)
                await _wait_healthy(f"http://127.0.0.1:{port}/healthz")
                fan_url, fan_pid = f"ws://127.0.0.1:{port}{WS_PATH}", bare.pid
            procs = await start_clients(fan_url, key, clients, args, data)
            await asyncio.sleep(1.0)
            watched = {"fan-out": fan_pid, "downloads": server.pid}
            watched |= {f"client{i}": p.pid for i, p in enumerate(procs)}
            if server_kind != "bare":
                del watched["downloads"]
            before = {name: cpu_seconds(pid) for name, pid in watched.items()}
            started = time.monotonic()
            spy = None
            if args.profile:
                suffix = {"raw": "txt", "flamegraph": "svg"}.get(args.profile_format, "json")
                out = Path(args.profile) / f"{name}.{suffix}"
                spy = await start_py_spy(fan_pid, out, args.seconds, args.profile_format)
            async with aiohttp.ClientSession() as session:
                api = Api(session, server.base_url, key)
                run.downloads = await pump_downloads(api, origin, args)
                # The last batches are at most batch_ms away; give them time to arrive.
                await asyncio.sleep(max(1.0, 4 * args.batch_ms / 1000))
                run.seconds = time.monotonic() - started
                run.cpu = {
                    name: (cpu_seconds(pid) - before[name]) / run.seconds
                    for name, pid in watched.items()
                }
                lifecycle = await api.lifecycle()
            if spy is not None:
                await spy.wait()
                if args.profile_format == "raw":
                    run.profile = top_frames(Path(args.profile) / f"{name}.txt")
            reports = []
            for i, proc in enumerate(procs):
                assert proc.stdin is not None
                proc.stdin.write(b"stop\n")
                await proc.stdin.drain()
                await proc.wait()
                reports.append(json.loads((data / f"clients-{i}.json").read_text()))
        finally:
            for proc in [*procs, *([bare] if bare else [])]:
                if proc.returncode is None:
                    proc.terminate()
                    await proc.wait()
    _score(run, lifecycle, reports)
    return run


def _score(run: Run, lifecycle: dict[int, str], reports: list[dict[str, Any]]) -> None:
    run.lifecycle_events = len(lifecycle)
    for report in reports:
        run.frames += report["frames"]
        for kind, n in report["closes"].items():
            run.closes[kind] = run.closes.get(kind, 0) + n
    for seq in lifecycle:
        key = str(seq)
        got = sum(r["got"].get(key, 0) for r in reports)
        run.missing += run.clients - got
        firsts = [r["first"][key] for r in reports if key in r["first"]]
        lasts = [r["last"][key] for r in reports if key in r["last"]]
        if firsts:
            run.spreads_ms.append((max(lasts) - min(firsts)) * 1000)


async def _wait_healthy(url: str, within: float = 30) -> None:
    deadline = time.monotonic() + within
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            try:
                async with session.get(url) as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise TimeoutError(url)


async def idle_socket_rss(url: str, pid: int, key: str, count: int) -> float:
    """RSS growth per idle socket (authenticated, subscribed to `*`), in bytes."""
    await asyncio.sleep(1.5)
    before = rss_bytes(pid)
    headers = {"Authorization": f"Bearer {key}"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        sockets = []
        for _ in range(count):
            ws = await session.ws_connect(url, headers=headers)
            await ws.send_str(json.dumps({"action": "subscribe", "task_id": "*"}))
            await ws.receive()
            sockets.append(ws)
        await asyncio.sleep(1.5)
        after = rss_bytes(pid)
        for ws in sockets:
            await ws.close()
    return (after - before) / count


async def idle_rss(args: argparse.Namespace, work: Path) -> tuple[float, float]:
    data = work / "idle"
    key = create_key(data, "bench", admin=True)
    with ServerProcess(data, "--loopback-only") as server:
        assert server.pid is not None
        ours = await idle_socket_rss(server.ws_url, server.pid, key, args.idle_sockets)
        port = free_port()
        cmd = [sys.executable, str(Path(__file__).resolve()), "serve-bare", "--port", str(port)]
        cmd += ["--upstream", server.ws_url, "--key", key, "--batch-ms", str(args.batch_ms)]
        bare = await asyncio.create_subprocess_exec(*cmd)
        try:
            await _wait_healthy(f"http://127.0.0.1:{port}/healthz")
            url = f"ws://127.0.0.1:{port}{WS_PATH}"
            bare_figure = await idle_socket_rss(url, bare.pid, key, args.idle_sockets)
        finally:
            bare.terminate()
            await bare.wait()
    return ours, bare_figure


async def main(args: argparse.Namespace) -> None:
    if args.profile:
        Path(args.profile).mkdir(parents=True, exist_ok=True)
    print(
        f"ws_fanout: {args.downloads} downloads at {args.rate / 1e6:g} MB/s each "
        f"({args.size / 1e6:g} MB files, topped up for {args.seconds:g} s); clients "
        f"subscribed to * with batch_ms {args.batch_ms}, in {args.client_procs} client "
        f"processes; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"
        + (f"; {args.burn} busy-loop processes on the side" if args.burn else ""),
        flush=True,
    )
    print("spread between the first and the last client receiving each lifecycle event (ms):")
    print(f"{'srv':<6} {'clients':>6} {'p50':>9} {'p99':>9} {'max':>9}")
    burners = [
        await asyncio.create_subprocess_exec(sys.executable, "-c", "while True: pass")
        for _ in range(args.burn)
    ]
    try:
        await _run_all(args)
    finally:
        for burner in burners:
            burner.kill()
            await burner.wait()
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")


async def _run_all(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp, OriginThread() as origin:
        work = Path(tmp)
        for clients in args.clients:
            kinds = ("before", "ours", "bare") if args.before_tree else ("ours", "bare")
            pair: dict[str, list[Run]] = {kind: [] for kind in kinds}
            for _ in range(args.rounds):
                for kind in kinds:
                    run = await run_once(kind, clients, args, work, origin)
                    pair[kind].append(run)
                    print(run.row(), flush=True)
                    if run.profile:
                        print(run.profile, flush=True)
            # Every round's lifecycle events pooled per server: the rounds alternate, so a
            # busy moment of the machine falls on all of them alike.
            pooled = {kind: [x for r in runs for x in r.spreads_ms] for kind, runs in pair.items()}
            for kind, spreads in pooled.items():
                cpu = statistics.mean(r.cpu["fan-out"] for r in pair[kind])
                print(
                    f"  {kind:<6} {clients:>6} {quantile(spreads, 0.5):>9.1f} "
                    f"{quantile(spreads, 0.99):>9.1f} {max(spreads):>9.1f}  pooled over "
                    f"{len(spreads)} lifecycle events; fan-out process CPU {cpu:.0%}"
                )
            bare = quantile(pooled["bare"], 0.99)
            for kind in pooled:
                if kind != "bare":
                    mine = quantile(pooled[kind], 0.99)
                    missed = sum(r.missing for r in pair[kind])
                    print(
                        f"  {clients} clients: spread p99 {kind}/bare = {mine:.0f}/{bare:.0f} ms "
                        f"= {mine / bare:.2f} (goal <= 1.2, bar 1.5); (lifecycle event, client) "
                        f"pairs missed: {missed}",
                        flush=True,
                    )
        if args.idle_sockets:
            ours_rss, bare_rss = await idle_rss(args, work)
            print(
                f"RSS per idle socket ({args.idle_sockets} sockets subscribed to *): "
                f"ours {ours_rss / 1024:.1f} KiB, bare broadcaster {bare_rss / 1024:.1f} KiB "
                "(goal < 20 KiB)"
            )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    sub = parser.add_subparsers(dest="command")
    bare = sub.add_parser("serve-bare")
    bare.add_argument("--port", type=int, required=True)
    bare.add_argument("--upstream", required=True)
    bare.add_argument("--key", required=True)
    bare.add_argument("--batch-ms", type=int, required=True)
    clients = sub.add_parser("clients")
    clients.add_argument("--url", required=True)
    clients.add_argument("--count", type=int, required=True)
    clients.add_argument("--key", required=True)
    clients.add_argument("--batch-ms", type=int, required=True)
    clients.add_argument("--report", required=True)
    parser.add_argument(
        "--clients", type=lambda s: [int(x) for x in s.split(",")], default=[500, 1000]
    )
    parser.add_argument("--downloads", type=int, default=20, help="downloads running at once")
    parser.add_argument("--rate", type=float, default=2e6, help="bytes/s per download")
    parser.add_argument("--size", type=int, default=3_000_000, help="bytes per download")
    parser.add_argument("--seconds", type=float, default=15.0, help="how long to add downloads")
    parser.add_argument("--batch-ms", type=int, default=250)
    parser.add_argument("--client-procs", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per size")
    parser.add_argument("--idle-sockets", type=int, default=500)
    parser.add_argument("--profile", default="", help="folder for py-spy profiles")
    parser.add_argument(
        "--profile-format", choices=["raw", "flamegraph", "speedscope"], default="raw"
    )
    parser.add_argument(
        "--burn", type=int, default=0, help="busy-loop processes on the side: a busy machine"
    )
    parser.add_argument(
        "--before-tree",
        default="",
        help="another checkout (say, `git archive main`) whose server also runs, as 'before'",
    )
    return parser


if __name__ == "__main__":
    parsed = _parser().parse_args()
    if parsed.command == "serve-bare":
        serve_bare(parsed)
    elif parsed.command == "clients":
        result = asyncio.run(run_clients(parsed))
        Path(parsed.report).write_text(json.dumps(result))
    else:
        asyncio.run(main(parsed))
