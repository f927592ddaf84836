"""Helpers for the download-engine tests (tests/test_engine_*.py).

`TinyOrigin` is a real aiohttp server for the few answers tests/origins.py cannot give
(a redirect to another host, a wrong Content-Range, a URL without a file name).
"""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from tests.apiclient import JSON, Api

# Short backoff so retried tests take milliseconds, not seconds.
FAST_RETRIES: dict[str, Any] = {"retry_base_delay": 0.02, "retry_max_delay": 0.1}


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def downloaded(api: Api, task: JSON) -> Path:
    return api.settings.downloads_dir / str(task["filename"])


def errors(events: list[JSON]) -> list[JSON]:
    """Every failed attempt: `download.retrying` for those retried, then `download.error`
    for the one that ended the task (#11)."""
    return [e for e in events if e["event"] in ("download.retrying", "download.error")]


def restarts(events: list[JSON]) -> list[JSON]:
    return [e for e in events if e["event"] == "download.started" and e.get("restarted_from_zero")]


class TinyOrigin:
    """An aiohttp server on 127.0.0.1 answering every GET with `handler`, logging requests."""

    def __init__(self, handler: Handler, host: str = "127.0.0.1") -> None:
        self.host = host
        self.requests: list[web.Request] = []
        self.port = 0
        self._handler = handler
        self._runner: web.AppRunner | None = None

    async def _logged(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(request)
        return await self._handler(request)

    def url(self, path: str) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{path}"

    async def __aenter__(self) -> TinyOrigin:
        app = web.Application()
        app.router.add_get("/{tail:.*}", self._logged)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@contextmanager
def small_filesystem(mountpoint: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` (e.g. "8m") at `mountpoint`, unmounted afterwards. Needs root."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mountpoint)],
        check=True,
        capture_output=True,
    )
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False, capture_output=True)


def resize_filesystem(mountpoint: Path, size: str) -> None:
    subprocess.run(
        ["mount", "-o", f"remount,size={size}", str(mountpoint)], check=True, capture_output=True
    )
