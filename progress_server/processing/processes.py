"""Running an external program (ffmpeg, ffprobe, a hook) without blocking the event loop.

Each program gets its own process group, so a cancel or a timeout kills it and everything
it started at once; the caller's await returns only after the process is reaped.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

LineHandler = Callable[[str], Awaitable[None]]

# Enough of stderr to explain a failure; more would only cost memory.
STDERR_TAIL = 4096


@dataclass(frozen=True)
class Finished:
    returncode: int
    stdout: bytes
    stderr_tail: str

    @property
    def last_error_line(self) -> str:
        lines = [line.strip() for line in self.stderr_tail.splitlines() if line.strip()]
        return lines[-1][:300] if lines else f"exit status {self.returncode}"


def as_file_url(path: Path) -> str:
    """A path as ffmpeg must be given it: `file:` and absolute, so that no file name (one
    starting with '-', or one like 'concat:a|b') is ever read as an option or a protocol."""
    return "file:" + str(path.resolve())


async def run_tool(
    argv: Sequence[str],
    *,
    on_line: LineHandler | None = None,
    stdout_limit: int = 16 * 1024 * 1024,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Finished:
    """Run `argv` to the end. With `on_line`, stdout is handed over line by line instead of
    being collected. A cancel (or a caller's `asyncio.timeout`) kills the process group
    before the error propagates."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
        env=dict(env) if env is not None else None,
        cwd=cwd,
    )
    assert proc.stdout is not None and proc.stderr is not None
    out, err = proc.stdout, proc.stderr
    stdout = bytearray()
    stderr = bytearray()

    async def read_stdout() -> None:
        if on_line is not None:
            async for raw in out:
                await on_line(raw.decode(errors="replace").rstrip("\r\n"))
            return
        # In chunks, not lines: a chatty program's endless line must not break the reader.
        while chunk := await out.read(65536):
            if len(stdout) < stdout_limit:
                stdout.extend(chunk[: stdout_limit - len(stdout)])

    async def read_stderr() -> None:
        while chunk := await err.read(65536):
            stderr.extend(chunk)
            del stderr[:-STDERR_TAIL]

    async def finish() -> int:
        await asyncio.gather(read_stdout(), read_stderr())
        return await proc.wait()

    try:
        returncode = await finish()
    except BaseException:
        await _kill(proc)
        raise
    return Finished(returncode, bytes(stdout), stderr.decode(errors="replace"))


async def _kill(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    # Shielded: reaped even if the caller is cancelled again meanwhile, so no zombie is left;
    # normally the caller waits for it and knows the process is gone once this returns.
    await asyncio.shield(proc.wait())
