"""Every README code block runs as written against a live server: each fenced `python` block
as a script, the `bash` blocks that talk to the server (curl) in one bash session, in order,
and the `javascript` block in Chromium (#11).

The blocks read PROGRESS_SERVER_URL, PROGRESS_SERVER_API_KEY, DOWNLOAD_URL and MEDIA_URL
from the environment where they say so; here those point at a test server, a local origin
and a local video site (tests/media_site.py) instead of http://127.0.0.1:8000, example.com
and YouTube. Nothing else is substituted.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from playwright.async_api import ConsoleMessage, Dialog

from tests.media_site import HLS_SECONDS, MediaSite
from tests.origins import Origin, payload_sha256
from tests.pagekit import chromium
from tests.serverproc import REPO_ROOT, ServerProcess, create_key

FENCE = re.compile(r"^```(\w+)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def talks_to_the_server(block: str) -> bool:
    return "/api/" in block


def blocks(language: str) -> list[str]:
    text = (REPO_ROOT / "README.md").read_text()
    return [body for lang, body in FENCE.findall(text) if lang == language]


def test_the_readme_has_the_blocks_this_test_runs() -> None:
    assert len(blocks("python")) >= 1
    assert any(talks_to_the_server(block) for block in blocks("bash"))
    assert len(blocks("javascript")) == 1
    known = {"python", "bash", "javascript"}
    assert {lang for lang, _ in FENCE.findall((REPO_ROOT / "README.md").read_text())} <= known


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def server(data_dir: Path) -> Iterator[ServerProcess]:
    with ServerProcess(data_dir) as running:
        yield running


def reader_env(server: ServerProcess, data_dir: Path, download_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROGRESS_SERVER_")}
    env["PYTHONPATH"] = str(REPO_ROOT)
    env.update(
        PROGRESS_SERVER_URL=server.base_url,
        PROGRESS_SERVER_DATA_DIR=str(data_dir),
        DOWNLOAD_URL=download_url,
    )
    return env


@pytest.mark.parametrize("index", range(len(blocks("python"))))
async def test_python_block_runs_as_written(
    index: int, server: ServerProcess, data_dir: Path, origin: Origin, tmp_path: Path
) -> None:
    script = tmp_path / "readme_block.py"
    script.write_text(blocks("python")[index])
    env = reader_env(server, data_dir, origin.url("/file/video.mp4", size=300_000, rate=600_000))
    env["PROGRESS_SERVER_API_KEY"] = create_key(data_dir, "python-reader")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        env=env,
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    lines = out.decode().splitlines()
    assert lines[0].startswith("download.queued"), lines
    assert any(line.startswith("download.progress {'percentage'") for line in lines), lines
    assert lines[-1].startswith("download.completed"), lines


async def test_bash_blocks_that_talk_to_the_server_run_as_written(
    server: ServerProcess, data_dir: Path, origin: Origin, site: MediaSite, tmp_path: Path
) -> None:
    size = 200_000
    env = reader_env(server, data_dir, origin.url("/file/video.mp4", size=size))
    # The media block's default is a real video site; here the local one's stream with
    # separate video and audio, so its format selector has both to pick and merge.
    env["MEDIA_URL"] = site.url("/media/split/master.m3u8")
    # The blocks run from the checkout's root (`.venv/bin/progress-server`); a link makes
    # this folder look like it, so the downloaded file lands here.
    (tmp_path / ".venv").symlink_to(REPO_ROOT / ".venv")
    # One shell, the blocks in their order, as a reader types them into one terminal: the
    # media block uses the quick start's KEY and SERVER. -e: any command that fails fails.
    script = "\n".join(b for b in blocks("bash") if talks_to_the_server(b))
    # Async: the origins serve from this test's own event loop meanwhile.
    proc = await asyncio.create_subprocess_exec(
        "bash",
        "-e",
        "-c",
        script,
        env=env,
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 90)
    assert proc.returncode == 0, err.decode()
    assert '"state": "completed"' in err.decode()
    saved = tmp_path / "video.mp4"
    assert saved.exists(), sorted(p.name for p in tmp_path.iterdir())
    assert hashlib.sha256(saved.read_bytes()).hexdigest() == payload_sha256(size)

    # The media block's answer (the only thing the blocks print on stdout): a media task,
    # which goes on to fetch and merge the stream's video and audio.
    created = json.loads(out.decode().strip().splitlines()[-1])
    assert created["source"] == "media" and created["options"]["format"], created
    checker = {"Authorization": f"Bearer {create_key(data_dir, 'checker', admin=True)}"}
    url = f"{server.base_url}/api/downloads/{created['task_id']}"
    async with aiohttp.ClientSession(headers=checker) as http:
        for _ in range(600):
            async with http.get(url) as resp:
                record = await resp.json()
            if record["state"] in ("completed", "failed", "cancelled"):
                break
            await asyncio.sleep(0.1)
    assert record["state"] == "completed", record
    assert record["result"]["duration_seconds"] == HLS_SECONDS


async def test_javascript_block_runs_in_chromium(
    server: ServerProcess, data_dir: Path, origin: Origin
) -> None:
    key = create_key(data_dir, "browser-reader")
    (block,) = blocks("javascript")
    logged: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "log":  # not the browser's own notes (a missing favicon)
            logged.append(message.text)

    async def on_dialog(dialog: Dialog) -> None:
        assert dialog.type == "prompt"
        await dialog.accept(key)

    async with chromium() as browser:
        page = await browser.new_page()
        page.on("console", on_console)
        page.on("dialog", on_dialog)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        # "pasted into the console of a page of the server": what DevTools' console does.
        await page.goto(f"{server.base_url}/api/docs")
        devtools = await page.context.new_cdp_session(page)
        answer = await devtools.send("Runtime.evaluate", {"expression": block})
        assert "exceptionDetails" not in answer, answer
        for _ in range(200):
            if any(text.startswith("subscribed") for text in logged):
                break
            await asyncio.sleep(0.05)
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}"}) as http:
            body = {"url": origin.url("/file/seen.bin", size=400_000, rate=800_000)}
            async with http.post(f"{server.base_url}/api/downloads", json=body) as resp:
                assert resp.status == 201
                task_id = (await resp.json())["task_id"]
        for _ in range(600):
            if any(text.startswith(f"download.completed {task_id}") for text in logged):
                break
            await asyncio.sleep(0.05)
    assert errors == []
    assert logged[0].startswith("authenticated"), logged
    assert any(text.startswith(f"download.completed {task_id}") for text in logged), logged
    progress = [text for text in logged if text.startswith(f"{task_id} ")]
    assert progress and all(re.fullmatch(rf"{task_id} [\d.]+ % [\d.]+ MB/s", p) for p in progress)
