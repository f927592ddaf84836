"""A start-up that fails half way says why and leaves nothing open behind it.

The failure is a real one: a regular file sits where the downloads folder must be, so the
scheduler's start fails after the store, the event bus, the key ring, the client session and
the webhook sender are already open.
"""

from __future__ import annotations

import asyncio
import gc
import os
import subprocess
import sys
import threading
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from progress_server.app import StartupError, create_app
from progress_server.settings import Settings
from tests.serverproc import REPO_ROOT, free_port


def data_dir_with_a_file_for_downloads(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    (data / "downloads").write_text("a file where the downloads folder must be\n")
    return data


def open_client_sessions() -> set[int]:
    gc.collect()
    return {
        id(obj)
        for obj in gc.get_objects()
        if isinstance(obj, aiohttp.ClientSession) and not obj.closed
    }


def open_files_under(folder: Path) -> list[str]:
    fds = Path("/proc/self/fd")
    found = []
    for fd in fds.iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith(str(folder)):
            found.append(target)
    return found


async def test_a_failed_start_closes_everything_it_opened(tmp_path: Path) -> None:
    data = data_dir_with_a_file_for_downloads(tmp_path)
    settings = Settings(
        data_dir=data,
        min_free_bytes=0,
        # So that the webhook sender opens its own client session before the failure.
        webhook_url="http://127.0.0.1:9/hook",
        webhook_secret="s3cret",
    )
    tasks_before = asyncio.all_tasks()
    threads_before = set(threading.enumerate())
    sessions_before = open_client_sessions()

    server = TestServer(create_app(settings))
    with pytest.raises(StartupError, match="could not start") as failed:
        await server.start_server()
    assert str(data / "downloads") in str(failed.value)

    # Let anything that was cancelled but not awaited get its turn to finish.
    for _ in range(3):
        await asyncio.sleep(0)
    leftover_tasks = [t for t in asyncio.all_tasks() - tasks_before if not t.done()]
    assert leftover_tasks == []
    # The default executor's workers ("asyncio_N") belong to the loop, not to the app. A
    # closed SQLite connection's thread ends a moment after the close; a leaked one never.
    new_threads = [
        t
        for t in threading.enumerate()
        if t not in threads_before and not t.name.startswith("asyncio_")
    ]
    for thread in new_threads:
        thread.join(timeout=5)
    assert [t for t in new_threads if t.is_alive()] == []
    assert open_client_sessions() - sessions_before == set()
    # The SQLite connections are closed: no file of the data folder is held open.
    assert open_files_under(data) == []
    await server.close()


def test_serve_exits_at_once_with_a_clear_error(tmp_path: Path) -> None:
    data = data_dir_with_a_file_for_downloads(tmp_path)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    cmd = [sys.executable, "-m", "progress_server", "serve", "--data-dir", str(data)]
    cmd += ["--port", str(free_port())]
    # A leftover SQLite thread keeps the interpreter alive for ever: the timeout catches it.
    proc = subprocess.run(
        cmd, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=30, check=False
    )
    assert proc.returncode == 1, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: could not start:"), proc.stderr
    assert str(data / "downloads") in last
    assert "Traceback" not in proc.stderr
    assert "Unclosed" not in proc.stderr
    assert "Task was destroyed" not in proc.stderr
