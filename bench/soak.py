"""Crash soak: downloads survive SIGKILL at random moments with nothing lost.

Starts progress-server as a subprocess, submits downloads of 1-50 MB from a local origin
(tests/origins.py, in a thread of this process) that also drops connections now and then,
SIGKILLs the server at random moments and restarts it each time. At the end every task must
be `completed`, every file must have the origin's sha256, and every task's persisted events
must be in lifecycle order with strictly increasing `seq`. Prints one line of figures and
exits non-zero on any loss.

    python bench/soak.py                    # 20 kills, 20 files of 1-50 MB
    python bench/soak.py --kills 3 --files 5 --max-mb 8   # the CI version
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import random
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.origins import Origin, payload_sha256
from tests.serverproc import ServerProcess, create_key

MB = 1_000_000
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))

# Which event may follow which in one task's persisted history. Progress events are not
# persisted one by one; `queued` may follow any unfinished event (recovery after a kill).
_UNFINISHED = {"download.queued", "download.started", "download.retrying", "download.processing"}
_MAY_FOLLOW: dict[str, set[str]] = {
    "download.queued": {"<start>"} | _UNFINISHED,
    "download.started": {"download.queued", "download.started", "download.retrying"},
    "download.retrying": {"download.started", "download.retrying"},
    "download.processing": {
        "download.started",
        "download.retrying",
        "download.processing",
        "download.queued",
    },
    "download.completed": {"download.processing"},
}
_STATE_OF = {
    "download.queued": {"pending"},
    "download.started": {"downloading"},
    "download.retrying": {"downloading"},  # retried attempts only: a soak task never fails
    "download.processing": {"processing"},
    "download.completed": {"completed"},
}


class OriginThread:
    """The fault-injecting origin on its own event loop, so server restarts never pause it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.origin = Origin()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> Origin:
        self._thread.start()
        future: Future[None] = asyncio.run_coroutine_threadsafe(self.origin.start(), self.loop)
        future.result(10)
        return self.origin

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.origin.close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


@dataclass
class Planned:
    index: int
    size: int
    url: str
    task_id: str = ""


class Client:
    def __init__(self, base_url: str, key: str) -> None:
        self.base_url = base_url
        self.key = key

    def call(self, method: str, path: str, body: Any = None, **headers: str) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base_url + path, data=data, method=method)
        request.add_header("Authorization", f"Bearer {self.key}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        for name, value in headers.items():
            request.add_header(name.replace("_", "-"), value)
        with _NO_PROXY.open(request, timeout=30) as response:
            return json.loads(response.read() or b"null")

    def events(self, task_id: str) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        after = 0
        while True:
            page = self.call("GET", f"/api/downloads/{task_id}/events?after_seq={after}")
            if not page["events"]:
                return events
            events += page["events"]
            after = page["events"][-1]["seq"]


def plan(files: int, min_mb: int, max_mb: int, origin: Origin, rng: random.Random) -> list[Planned]:
    planned = []
    for i in range(files):
        size = rng.randint(min_mb * MB, max_mb * MB)
        params: dict[str, str | int | float | bool] = {"size": size, "seed": 1000 + i}
        # The rate keeps transfers running long enough for kills to land mid-download.
        params["rate"] = 6 * MB
        params["chunk"] = 256 * 1024
        if i % 3 == 0:
            params["drop_after"] = rng.randint(size // 5, size * 4 // 5)
            params["drop_times"] = 2
        planned.append(Planned(i, size, origin.url(**params)))
    return planned


def submit_all(client: Client, planned: list[Planned]) -> None:
    for p in planned:
        # The Idempotency-Key makes a submission repeated after a kill return the same task.
        task = client.call(
            "POST",
            "/api/downloads",
            {"url": p.url, "filename": f"soak-{p.index:02d}.bin"},
            Idempotency_Key=f"soak-{p.index}",
        )
        p.task_id = task["task_id"]


def check_history(events: list[dict[str, Any]]) -> list[str]:
    problems = []
    previous = "<start>"
    last_seq = 0
    for event in events:
        name = event["event"]
        if event["seq"] <= last_seq:
            problems.append(f"seq {event['seq']} after {last_seq}")
        last_seq = event["seq"]
        if previous not in _MAY_FOLLOW.get(name, set()):
            problems.append(f"{name} after {previous}")
        if event["state"] not in _STATE_OF.get(name, set()):
            problems.append(f"{name} with state {event['state']}")
        previous = name
    if previous != "download.completed":
        problems.append(f"history ends with {previous}")
    return problems


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1024 * 1024):
            digest.update(block)
    return digest.hexdigest()


def wait_all_final(client: Client, planned: list[Planned], within: float) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while True:
        tasks = {p.task_id: client.call("GET", f"/api/downloads/{p.task_id}") for p in planned}
        if all(t["state"] in ("completed", "failed", "cancelled") for t in tasks.values()):
            return tasks
        if time.monotonic() > deadline:
            return tasks
        time.sleep(0.5)


def run(args: argparse.Namespace, data_dir: Path) -> int:
    rng = random.Random(args.seed)
    # Killing the server mid-response makes the origin log each broken write; expected here.
    logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)
    key = create_key(data_dir, "soak", admin=True)
    server = ServerProcess(
        data_dir,
        "--max-concurrent",
        "4",
        "--max-per-host",
        "4",
        "--max-retries",
        "50",
        "--stall-timeout",
        "10",
    )
    started = time.monotonic()
    kills = 0
    with OriginThread() as origin:
        planned = plan(args.files, args.min_mb, args.max_mb, origin, rng)
        server.start()
        client = Client(server.base_url, key)
        submit_all(client, planned)
        for _ in range(args.kills):
            time.sleep(rng.uniform(args.min_gap, args.max_gap))
            server.kill()
            kills += 1
            server.start(timeout=30)
        tasks = wait_all_final(client, planned, args.timeout)
        files_right = events_checked = 0
        problems: list[str] = []
        for p in planned:
            task = tasks[p.task_id]
            if task["state"] != "completed":
                problems.append(f"task {p.index} ended {task['state']}: {task.get('error')}")
                continue
            path = data_dir / "downloads" / task["filename"]
            if path.is_file() and sha256_of(path) == payload_sha256(p.size, 1000 + p.index):
                files_right += 1
            else:
                problems.append(f"task {p.index}: {path.name} missing or wrong sha256")
            events = client.events(p.task_id)
            events_checked += len(events)
            problems += [f"task {p.index}: {text}" for text in check_history(events)]
        all_seqs = [e["seq"] for e in client.call("GET", "/api/events?limit=5000")["events"]]
        if all_seqs != sorted(set(all_seqs)):
            problems.append("server-wide history is not strictly increasing in seq")
        server.stop()
    total_mb = sum(p.size for p in planned) / MB
    elapsed = time.monotonic() - started
    completed = sum(1 for t in tasks.values() if t["state"] == "completed")
    print(
        f"soak: kills survived {kills}/{args.kills}, files right {files_right}/{args.files}, "
        f"tasks completed {completed}/{args.files}, events checked {events_checked} "
        f"(seq strictly increasing, lifecycle in order), {total_mb:.0f} MB in {elapsed:.0f} s"
    )
    for problem in problems:
        print("  LOSS:", problem)
    if problems:
        print(server.log_tail(60), file=sys.stderr)
    return 1 if problems or files_right != args.files else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20, help="SIGKILLs (default 20)")
    parser.add_argument("--files", type=int, default=20, help="downloads (default 20)")
    parser.add_argument("--min-mb", type=int, default=1, help="smallest file, MB")
    parser.add_argument("--max-mb", type=int, default=50, help="largest file, MB")
    parser.add_argument("--min-gap", type=float, default=0.3, help="least seconds between kills")
    parser.add_argument("--max-gap", type=float, default=3.0, help="most seconds between kills")
    parser.add_argument("--timeout", type=float, default=600, help="seconds to finish after")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    parser.add_argument("--data-dir", type=Path, default=None, help="keep data here")
    args = parser.parse_args()
    if args.seed is None:
        args.seed = random.randrange(1 << 30)
    print(f"soak: seed {args.seed}", file=sys.stderr)
    if args.data_dir is not None:
        return run(args, args.data_dir)
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        return run(args, Path(tmp))


if __name__ == "__main__":
    sys.exit(main())
