"""The command line against a running server: click's runner for parsing and output, and a
real `python -m progress_server` subprocess (in a pseudo-terminal) for the live bars."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import re
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from progress_server.cli import main
from tests.apiclient import Api
from tests.conftest import MakeApi
from tests.origins import Origin
from tests.serverproc import REPO_ROOT, free_port

SLOW = {"size": 3_000_000, "rate": 300_000}  # ten seconds unless stopped


@pytest.fixture
async def api(make_api: MakeApi) -> Api:
    return await make_api(retry_base_delay=0.05, max_retries=0)


def base_url(api: Api) -> str:
    return str(api.client.make_url("")).rstrip("/")


async def cli(api: Api, *args: str, key: str | None = None, **env: str) -> Result:
    """Run `progress-server ARGS` in a thread (it runs its own event loop) against `api`."""
    full_env = {
        "PROGRESS_SERVER_URL": base_url(api),
        "PROGRESS_SERVER_API_KEY": key or api.key,
        **env,
    }
    runner = CliRunner()
    return await asyncio.to_thread(runner.invoke, main, list(args), env=full_env)


def table(result: Result) -> list[list[str]]:
    return [line.split() for line in result.stdout.splitlines()]


# -- add, ls, show ------------------------------------------------------------------------


async def test_add_prints_a_table_row_and_json_prints_the_record(api: Api, origin: Origin) -> None:
    added = await cli(api, "add", origin.url("/file/a.bin", size=1000))
    assert added.exit_code == 0, added.output
    header, row = table(added)
    assert header[:3] == ["ID", "STATE", "DONE"]
    tasks = await api.tasks()
    assert len(tasks) == 1
    assert row[0] == tasks[0]["task_id"][:8]

    as_json = await cli(api, "add", origin.url(size=1000), "--filename", "named.bin", "--json")
    assert as_json.exit_code == 0, as_json.output
    [record] = json.loads(as_json.stdout)
    assert record["filename"] == "named.bin"
    assert record["task_id"] == (await api.task(record["task_id"]))["task_id"]


async def test_ls_json_prints_every_record_exactly_as_the_api_returns_it(
    api: Api, origin: Origin
) -> None:
    ids = [(await api.submit(origin.url(size=2000, seed=i)))["task_id"] for i in range(3)]
    failing = (await api.submit(origin.url(status=404)))["task_id"]
    for task_id in ids:
        await api.wait_for(task_id, "completed")
    await api.wait_for(failing, "failed")

    result = await cli(api, "ls", "--json")
    assert result.exit_code == 0, result.output
    listed = json.loads(result.stdout)
    assert [record["task_id"] for record in listed] == [*ids, failing]
    assert listed == [await api.task(task_id) for task_id in [*ids, failing]]

    only_failed = json.loads((await cli(api, "ls", "--state", "failed", "--json")).stdout)
    assert [record["task_id"] for record in only_failed] == [failing]


async def test_ls_table_shows_state_progress_name_and_error(api: Api, origin: Origin) -> None:
    done = await api.submit(origin.url("/file/report.pdf", size=2_500_000))
    failed = await api.submit(origin.url("/file/missing.bin", status=404))
    await api.wait_for(done["task_id"], "completed")
    await api.wait_for(failed["task_id"], "failed")

    result = await cli(api, "ls")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split()[:6] == ["ID", "STATE", "DONE", "SIZE", "SPEED", "NAME"]
    by_id = {line.split()[0]: line for line in lines[1:]}
    completed_line = by_id[done["task_id"][:8]]
    assert "completed" in completed_line
    assert "100.0 %" in completed_line
    assert "2.4 MiB" in completed_line
    assert "report.pdf" in completed_line
    failed_line = by_id[failed["task_id"][:8]]
    assert "failed" in failed_line
    assert "http_error" in failed_line


async def test_ls_names_an_unnamed_task_from_its_url_unquoted(api: Api, origin: Origin) -> None:
    # Refused before the origin named a file: the name comes from the URL, as on the page.
    failed = await api.submit(origin.url("/file/Quarterly Report.pdf", status=404))
    assert "%20" in failed["url"]
    record = await api.wait_for(failed["task_id"], "failed")
    # The record names it the same way, sanitised (#11).
    assert record["filename"] == "Quarterly Report.pdf"

    result = await cli(api, "ls")
    assert result.exit_code == 0, result.output
    [line] = [line for line in result.stdout.splitlines() if line.startswith(failed["task_id"][:8])]
    assert "Quarterly Report.pdf" in line


async def test_show_accepts_a_unique_prefix(api: Api, origin: Origin) -> None:
    task = await api.submit(origin.url("/file/doc.txt", size=500))
    await api.wait_for(task["task_id"], "completed")
    result = await cli(api, "show", task["task_id"][:6])
    assert result.exit_code == 0, result.output
    fields = dict(line.split(None, 1) for line in result.stdout.splitlines())
    assert fields["Task"] == task["task_id"]
    assert fields["State"] == "completed"
    assert fields["File"] == "doc.txt"

    as_json = await cli(api, "show", task["task_id"], "--json")
    assert json.loads(as_json.stdout) == await api.task(task["task_id"])

    unknown = await cli(api, "show", "ffffffff")
    assert unknown.exit_code == 1
    assert "no task matches 'ffffffff'" in unknown.stderr


# -- actions ------------------------------------------------------------------------------


async def test_pause_resume_cancel_retry_rm(api: Api, origin: Origin) -> None:
    task = await api.submit(origin.url("/file/big.bin", **SLOW))
    task_id = task["task_id"]
    await api.wait_for(task_id, "downloading")

    paused = await cli(api, "pause", task_id[:8], "--json")
    assert paused.exit_code == 0, paused.output
    assert json.loads(paused.stdout)[0]["state"] == "paused"
    assert (await api.task(task_id))["state"] == "paused"

    resumed = await cli(api, "resume", task_id)
    assert resumed.exit_code == 0, resumed.output
    assert (await api.task(task_id))["state"] in ("pending", "downloading")

    cancelled = await cli(api, "cancel", task_id)
    assert cancelled.exit_code == 0, cancelled.output
    assert table(cancelled)[1][1] == "cancelled"

    retried = await cli(api, "retry", task_id)
    assert retried.exit_code == 0, retried.output
    assert (await api.task(task_id))["state"] in ("pending", "downloading")
    await cli(api, "cancel", task_id)

    removed = await cli(api, "rm", task_id)
    assert removed.exit_code == 0, removed.output
    assert removed.stdout.strip() == f"Deleted {task_id}"
    assert await api.tasks() == []


async def test_rm_delete_file_and_a_refused_action_exit_non_zero(api: Api, origin: Origin) -> None:
    task = await api.submit(origin.url("/file/keep.bin", size=1000))
    await api.wait_for(task["task_id"], "completed")
    path = api.settings.downloads_dir / "keep.bin"
    assert path.exists()

    refused = await cli(api, "cancel", task["task_id"])
    assert refused.exit_code == 1
    assert "conflict" in refused.stderr
    assert (await api.task(task["task_id"]))["state"] == "completed"

    removed = await cli(api, "rm", "--delete-file", task["task_id"])
    assert removed.exit_code == 0, removed.output
    assert not path.exists()


# -- options and failures -----------------------------------------------------------------


async def test_missing_wrong_key_and_unreachable_server_say_so(api: Api) -> None:
    no_key = await cli(api, "ls", key="", PROGRESS_SERVER_API_KEY="")
    assert no_key.exit_code == 2
    assert "no API key" in no_key.stderr

    wrong = await cli(api, "ls", key="psk_wrong")
    assert wrong.exit_code == 1
    assert "invalid or revoked API key" in wrong.stderr
    assert "psk_wrong" not in wrong.output

    nowhere = f"http://127.0.0.1:{free_port()}"
    down = await cli(api, "ls", "--server", nowhere)
    assert down.exit_code == 1
    assert f"cannot reach {nowhere}" in down.stderr


async def test_flags_override_the_environment(api: Api, origin: Origin) -> None:
    await api.submit(origin.url(size=100))
    other = await api.new_key("other")
    env_key = await cli(api, "ls", "--json", key=other)
    assert json.loads(env_key.stdout) == []
    flag_key = await cli(api, "ls", "--json", "--api-key", api.key, key=other)
    assert len(json.loads(flag_key.stdout)) == 1
    bad_url_env = await cli(
        api,
        "ls",
        "--json",
        "--server",
        base_url(api),
        PROGRESS_SERVER_URL=f"http://127.0.0.1:{free_port()}",
    )
    assert bad_url_env.exit_code == 0, bad_url_env.output


async def test_invalid_input_is_refused_with_the_servers_message(api: Api, origin: Origin) -> None:
    bad = await cli(api, "add", origin.url(size=10), "--filename", "../x")
    assert bad.exit_code == 1
    assert "validation_error" in bad.stderr
    two_names = await cli(api, "add", origin.url(), origin.url(), "--filename", "a.bin")
    assert two_names.exit_code == 2
    assert await api.tasks() == []

    # One refused URL among several: the others are still added, and the exit says so.
    good = origin.url("/file/good.bin", size=100)
    mixed = await cli(api, "add", good, "ftp://example.com/x", "--wait", "--json")
    assert mixed.exit_code == 1
    assert "ftp://example.com/x" in mixed.stderr
    [record] = json.loads(mixed.stdout)
    assert (record["url"], record["state"]) == (good, "completed")


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")
async def test_add_preset_transcodes_and_wait_shows_processing(api: Api, tmp_path: Path) -> None:
    media = tmp_path / "media"
    media.mkdir()
    tone = ["-f", "lavfi", "-i", "sine=frequency=440:duration=3", "-c:a", "flac"]
    ffmpeg = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y"]
    command = [*ffmpeg, *tone, str(media / "tone.flac")]
    await asyncio.to_thread(subprocess.run, command, check=True, timeout=120)
    async with Origin(media_dir=media) as source:
        url = source.url("/media/tone.flac")
        unknown = await cli(api, "add", url, "--preset", "nonsense")
        assert unknown.exit_code == 1
        assert "unknown transcode preset" in unknown.stderr
        result = await cli(api, "add", url, "--preset", "mp3", "--wait", "--json")
    assert result.exit_code == 0, result.output
    [record] = json.loads(result.stdout)
    assert record["state"] == "completed"
    assert record["result"]["filename"].endswith(".mp3")
    assert any(" processing " in f" {line} " for line in result.stderr.splitlines())


# -- live progress (WebSocket) --------------------------------------------------------------


async def test_add_wait_follows_progress_and_exits_zero(api: Api, origin: Origin) -> None:
    url = origin.url("/file/movie.bin", size=1_200_000, rate=1_000_000)
    result = await cli(api, "add", url, "--wait")
    assert result.exit_code == 0, result.output
    # Not a terminal: one plain line per state change, progress about once a second.
    lines = result.stderr.splitlines()
    assert any("downloading" in line and "%" in line for line in lines), result.stderr
    assert "completed" in lines[-1]
    assert "100.0 %" in lines[-1]
    assert table(result)[1][1] == "completed"


async def test_add_wait_exits_non_zero_when_a_task_fails(api: Api, origin: Origin) -> None:
    ok = origin.url("/file/fine.bin", size=1000)
    missing = origin.url("/file/nope.bin", status=404)
    result = await cli(api, "add", ok, missing, "--wait", "--json")
    assert result.exit_code == 1, result.output
    records = json.loads(result.stdout)
    assert [r["state"] for r in records] == ["completed", "failed"]
    assert "http_error" in result.stderr


async def test_watch_without_ids_follows_running_tasks_until_done(api: Api, origin: Origin) -> None:
    # Both take about two seconds, so they are still running when `watch` starts; two.bin
    # then loses its connection (no retries on this server) and fails.
    first = await api.submit(origin.url("/file/one.bin", size=1_000_000, rate=500_000))
    second = await api.submit(
        origin.url("/file/two.bin", size=1_000_000, rate=400_000, drop_after=800_000)
    )
    result = await cli(api, "watch")
    assert result.exit_code == 1, result.output  # two.bin failed
    assert (await api.task(first["task_id"]))["state"] == "completed"
    assert (await api.task(second["task_id"]))["state"] == "failed"
    assert "one.bin" in result.stderr

    nothing = await cli(api, "watch")
    assert nothing.exit_code == 0
    assert "Nothing is running" in nothing.stderr

    finished = await cli(api, "watch", first["task_id"][:8])
    assert finished.exit_code == 0, finished.output


def run_in_terminal(argv: list[str], env: dict[str, str], within: float = 90) -> tuple[int, str]:
    """Run a command with a pseudo-terminal as stdout and stderr; its exit code and output."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=follower, stderr=follower, env=env, cwd="/"
    )
    os.close(follower)
    chunks: list[bytes] = []
    deadline = time.monotonic() + within
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.2)
            if ready:
                try:
                    data = os.read(leader, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
        else:
            proc.kill()
        code = proc.wait(10)
    finally:
        os.close(leader)
    return code, b"".join(chunks).decode(errors="replace")


async def test_add_wait_in_a_terminal_draws_a_moving_bar(api: Api, origin: Origin) -> None:
    url = origin.url("/file/clip.bin", size=2_000_000, rate=1_000_000)
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "PROGRESS_SERVER_URL": base_url(api),
        "PROGRESS_SERVER_API_KEY": api.key,
        "TERM": "xterm-256color",
        "COLUMNS": "120",
    }
    argv = [sys.executable, "-m", "progress_server", "add", url, "--wait"]
    code, output = await asyncio.to_thread(run_in_terminal, argv, env)
    assert code == 0, output
    assert "clip.bin" in output
    # The bar is redrawn in place (cursor movement), with several different percentages.
    assert "\x1b[" in output
    shown = set(re.findall(r"(?<![\d.])(\d+\.\d) %", output))
    assert len(shown) >= 3, shown
    assert "100.0" in shown
    assert "━" in output


async def test_add_wait_subprocess_exits_non_zero_for_a_404(api: Api, origin: Origin) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "PROGRESS_SERVER_URL": base_url(api),
        "PROGRESS_SERVER_API_KEY": api.key,
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "progress_server",
        "add",
        origin.url("/file/absent.bin", status=404),
        "--wait",
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(proc.communicate(), 90)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode == 1, (stdout, stderr)
    assert b"failed" in stderr
    assert b"http_error" in stderr
    assert b"failed" in stdout  # the final table
