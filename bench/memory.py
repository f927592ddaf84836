"""Memory: RSS idle, per idle WebSocket, and during a 1 GiB download.

Each figure has a baseline from the same run: a bare aiohttp process (an app with one
WebSocket route that holds its sockets, nothing else) measured the same way, and, for the
download, the server's own RSS before it started. RSS is read from /proc/PID/status.

    python bench/memory.py [--sockets 500] [--download-mb 1024]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.soak import OriginThread
from tests.serverproc import ServerProcess, create_key, free_port

MIB = 1024 * 1024

BARE_SERVER = r"""
import sys
from aiohttp import web, WSMsgType

async def ws(request):
    sock = web.WebSocketResponse()
    await sock.prepare(request)
    async for message in sock:
        if message.type == WSMsgType.TEXT:
            await sock.send_str('{"event": "subscribed"}')
    return sock

async def health(request):
    return web.Response(text="ok")

app = web.Application()
app.router.add_get("/api/progress/ws", ws)
app.router.add_get("/healthz", health)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


async def settle(pid: int, seconds: float = 1.5) -> int:
    await asyncio.sleep(seconds)
    return rss(pid)


async def open_sockets(url: str, count: int, key: str | None) -> list[object]:
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    sockets: list[object] = [session]
    for _ in range(count):
        ws = await session.ws_connect(url, headers=headers)
        await ws.send_json({"action": "subscribe", "task_id": "*"})
        await ws.receive()  # the server has set the socket up completely
        sockets.append(ws)
    return sockets


async def close_sockets(sockets: list[object]) -> None:
    session = sockets[0]
    assert isinstance(session, aiohttp.ClientSession)
    await session.close()


async def measure_sockets(pid: int, url: str, count: int, key: str | None) -> tuple[int, float]:
    before = await settle(pid)
    sockets = await open_sockets(url, count, key)
    after = await settle(pid)
    await close_sockets(sockets)
    return before, (after - before) / count


async def download_peak(base_url: str, key: str, pid: int, url: str) -> tuple[int, int, float]:
    before = await settle(pid)
    peak = before
    headers = {"Authorization": f"Bearer {key}"}
    started = time.monotonic()
    async with aiohttp.ClientSession(headers=headers) as http:
        async with http.post(base_url + "/api/downloads", json={"url": url}) as resp:
            task_id = (await resp.json())["task_id"]
        while True:
            peak = max(peak, rss(pid))
            async with http.get(f"{base_url}/api/downloads/{task_id}") as resp:
                state = (await resp.json())["state"]
            if state in ("completed", "failed", "cancelled"):
                break
            await asyncio.sleep(0.05)
    if state != "completed":
        raise RuntimeError(f"the download ended {state}")
    return before, peak, time.monotonic() - started


async def run(args: argparse.Namespace, data: Path) -> dict[str, float]:
    key = create_key(data, "bench")
    figures: dict[str, float] = {}
    bare_port = free_port()
    bare = await asyncio.create_subprocess_exec(sys.executable, "-c", BARE_SERVER, str(bare_port))
    try:
        await asyncio.sleep(1.0)
        bare_url = f"http://127.0.0.1:{bare_port}/api/progress/ws"
        figures["bare_idle"], figures["bare_per_socket"] = await measure_sockets(
            bare.pid, bare_url, args.sockets, None
        )
    finally:
        bare.terminate()
        await bare.wait()
    server = ServerProcess(data, "--loopback-only")
    with server, OriginThread() as origin:
        assert server.pid is not None
        figures["idle"], figures["per_socket"] = await measure_sockets(
            server.pid, server.ws_url, args.sockets, key
        )
        size = args.download_mb * MIB
        before, peak, seconds = await download_peak(
            server.base_url, key, server.pid, origin.url(size=size, chunk=MIB)
        )
        figures.update(download_before=before, download_peak=peak, download_seconds=seconds)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sockets", type=int, default=500)
    parser.add_argument("--download-mb", type=int, default=1024)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="memory-") as tmp:
        f = asyncio.run(run(args, Path(tmp)))
    print(
        f"memory: idle {f['idle'] / MIB:.1f} MiB vs bare aiohttp {f['bare_idle'] / MIB:.1f} MiB "
        f"= {f['idle'] / f['bare_idle']:.2f}; "
        f"per idle WebSocket {f['per_socket'] / 1024:.1f} KiB vs bare "
        f"{f['bare_per_socket'] / 1024:.1f} KiB = {f['per_socket'] / f['bare_per_socket']:.2f} "
        f"({args.sockets} sockets); "
        f"{args.download_mb} MiB download: peak {f['download_peak'] / MIB:.1f} MiB vs "
        f"{f['download_before'] / MIB:.1f} MiB before = "
        f"{f['download_peak'] / f['download_before']:.2f} ({f['download_seconds']:.1f} s)"
    )
    print(json.dumps({k: round(v, 1) for k, v in f.items()}), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
