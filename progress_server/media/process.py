"""WorkerProcess: one media worker in its own process group, read line by line, stopped whole.

The worker is a session leader, so yt-dlp and every ffmpeg it starts share one process
group: stopping sends SIGTERM to the group, gives it a moment, then SIGKILL to whatever is
left of it, and returns only after the worker is reaped. Nothing outlives a cancel.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import progress_server

WORKER_MODULE = "progress_server.media.worker"
# A playlist line lists every entry; lines stay well under this.
LINE_LIMIT = 16 * 1024 * 1024
STDERR_TAIL = 4096


def worker_env() -> dict[str, str]:
    """The server's environment, with the folders holding this package and yt-dlp first on
    the worker's path: a .pyz or zipapp install has them only on the server's sys.path."""
    roots = [str(Path(progress_server.__file__).resolve().parent.parent)]
    with contextlib.suppress(ImportError):
        import yt_dlp

        roots.append(str(Path(yt_dlp.__file__).resolve().parent.parent))
    env = dict(os.environ)
    existing = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys([*roots, *existing]))
    return env


class WorkerProcess:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.pid = proc.pid
        self._stderr = bytearray()
        assert proc.stderr is not None
        self._stderr_reader = asyncio.create_task(self._drain_stderr(proc.stderr))

    @classmethod
    async def start(cls, job_json: str, python: str | None = None) -> WorkerProcess:
        proc = await asyncio.create_subprocess_exec(
            python or sys.executable,
            "-m",
            WORKER_MODULE,
            "--supervised",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
            limit=LINE_LIMIT,
            env=worker_env(),
        )
        worker = cls(proc)
        assert proc.stdin is not None
        # The job travels on stdin, not argv: its URL may carry a token that `ps` would show.
        # stdin then stays open: its end tells a --supervised worker that the server is gone.
        proc.stdin.write(job_json.encode() + b"\n")
        with contextlib.suppress(ConnectionError):
            await proc.stdin.drain()
        return worker

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        """The worker's JSON lines, until its stdout closes; a line that is not JSON is skipped."""
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            try:
                event = json.loads(raw)
            except ValueError:
                continue
            if isinstance(event, dict) and isinstance(event.get("event"), str):
                yield event

    async def wait(self) -> int:
        code = await self.proc.wait()
        with contextlib.suppress(asyncio.CancelledError):
            await self._stderr_reader
        return code

    @property
    def last_stderr_line(self) -> str:
        lines = [ln.strip() for ln in self._stderr.decode(errors="replace").splitlines()]
        lines = [ln for ln in lines if ln]
        return lines[-1][:300] if lines else ""

    async def stop(self, grace: float = 1.0) -> None:
        """SIGTERM to the whole group, SIGKILL after `grace` seconds; returns once reaped."""
        self._signal_group(signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(self.proc.wait()), grace)
        except TimeoutError:
            pass
        finally:
            # Also after the worker exited: an ffmpeg it started may still be in the group.
            self._signal_group(signal.SIGKILL)
        await self.proc.wait()
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self._stderr_reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._stderr_reader

    def _signal_group(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)

    async def _drain_stderr(self, stream: asyncio.StreamReader) -> None:
        # Read all along, or a chatty worker would block on a full pipe.
        while chunk := await stream.read(65536):
            self._stderr.extend(chunk)
            del self._stderr[:-STDERR_TAIL]
