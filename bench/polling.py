"""Polling throughput: GET /api/progress/{id} against a bare aiohttp handler, same run.

Both servers run as their own process (one core each at most, like the real thing); `wrk`
(Debian's package) drives each in turn with the same connections and duration. Four runs:
progress-server's 200 and 304 paths, and the bare handler's 200 and 304 paths (the bare
handler returns the same JSON bytes and honours If-None-Match the same way).

    python bench/polling.py [--seconds 10] [--connections 32]

Goal: at least 0.7 of the bare handler's rate on the 200 path, 0.8 on the 304 path.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.serverproc import ServerProcess, create_key, free_port

_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))

BARE_SERVER = r"""
import sys
from aiohttp import web

body = open(sys.argv[2], "rb").read()
etag = sys.argv[3]

async def progress(request):
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    if request.headers.get("If-None-Match") == etag:
        return web.Response(status=304, headers=headers)
    return web.Response(body=body, content_type="application/json", headers=headers)

app = web.Application()
app.router.add_get("/api/progress/{task_id}", progress)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""


def call(url: str, key: str, body: object = None) -> tuple[int, dict[str, str], bytes]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method="POST" if data else "GET")
    request.add_header("Authorization", f"Bearer {key}")
    if data:
        request.add_header("Content-Type", "application/json")
    with _NO_PROXY.open(request, timeout=10) as resp:
        return resp.status, dict(resp.headers), resp.read()


def wrk(url: str, seconds: int, connections: int, headers: list[str]) -> float:
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency"]
    for header in headers:
        cmd += ["-H", header]
    out = subprocess.run([*cmd, url], capture_output=True, text=True, check=True).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if match is None or non2xx is not None:
        raise RuntimeError(f"wrk failed or saw errors:\n{out}")
    return float(match.group(1))


def wait_ready(url: str) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            _NO_PROXY.open(url, timeout=1)
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(url)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5, help="per wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds")
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("polling: wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="polling-") as tmp:
        data = Path(tmp)
        key = create_key(data, "bench")
        server = ServerProcess(data, "--loopback-only")
        with server:
            # A task whose download fails at once (nothing listens on that port) still has
            # a snapshot to poll; no origin is needed.
            nowhere = f"http://127.0.0.1:{free_port()}/x"
            _, _, raw = call(server.base_url + "/api/downloads", key, {"url": nowhere})
            task_id = json.loads(raw)["task_id"]
            url = f"{server.base_url}/api/progress/{task_id}"
            for _ in range(100):
                _, headers, body = call(url, key)
                if json.loads(body)["state"] == "failed":
                    break
                time.sleep(0.1)
            etag = headers["ETag"]
            body_file = data / "body.json"
            body_file.write_bytes(body)
            port = free_port()
            bare = subprocess.Popen(
                [sys.executable, "-c", BARE_SERVER, str(port), str(body_file), etag],
                stdout=subprocess.DEVNULL,
            )
            try:
                bare_url = f"http://127.0.0.1:{port}/api/progress/{task_id}"
                wait_ready(bare_url)
                rates = measure(args, url, bare_url, key, etag)
            finally:
                bare.terminate()
                bare.wait(10)
    # Each configuration's best round: the one least disturbed by anything else running.
    best = {name: max(values) for name, values in rates.items()}
    r200 = best["ours_200"] / best["bare_200"]
    r304 = best["ours_304"] / best["bare_304"]
    print(
        f"polling: 200 path {best['ours_200']:.0f} req/s vs bare {best['bare_200']:.0f} = "
        f"{r200:.2f} (goal 0.70); 304 path {best['ours_304']:.0f} req/s vs bare "
        f"{best['bare_304']:.0f} = {r304:.2f} (goal 0.80); best of {args.rounds} alternating "
        f"rounds of wrk -t1 -c{args.connections} -d{args.seconds}s"
    )
    print(json.dumps(rates), file=sys.stderr)
    return 0


def measure(
    args: argparse.Namespace, url: str, bare_url: str, key: str, etag: str
) -> dict[str, list[float]]:
    """Alternate the four configurations so a busy moment hits them all alike."""
    auth = f"Authorization: Bearer {key}"
    runs = {
        "ours_200": (url, [auth]),
        "bare_200": (bare_url, [auth]),
        "ours_304": (url, [auth, f"If-None-Match: {etag}"]),
        "bare_304": (bare_url, [auth, f"If-None-Match: {etag}"]),
    }
    rates: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, (target, headers) in runs.items():
            rates[name].append(wrk(target, args.seconds, args.connections, headers))
    return rates


if __name__ == "__main__":
    sys.exit(main())
