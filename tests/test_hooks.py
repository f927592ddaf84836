"""Hooks: --webhook deliveries checked by a real local receiver, --on-complete commands run
for real (a small Python script reporting its environment), and the record of each in the
task's event history."""

from __future__ import annotations

import hashlib
import hmac
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.apiclient import Api, eventually
from tests.conftest import MakeApi
from tests.origins import Origin

SECRET = "s3cret-for-tests"

# Writes its environment (as JSON) to argv[1]; with argv[2] == "gate", first waits until
# the file argv[3] exists; with "exit", prints to stderr and exits with argv[3]; with
# "sleep", sleeps argv[3] seconds.
HOOK_SCRIPT = """
import json, os, sys, time
out, mode, arg = sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "", sys.argv[3:] or [""]
if mode == "gate":
    while not os.path.exists(arg[0]):
        time.sleep(0.05)
if mode == "sleep":
    time.sleep(float(arg[0]))
env = {k: v for k, v in os.environ.items() if k.startswith("PROGRESS_SERVER_")}
with open(out + ".tmp", "w") as f:
    json.dump({"env": env, "cwd": os.getcwd()}, f)
os.replace(out + ".tmp", out)
if mode == "exit":
    print("boom: the hook went wrong", file=sys.stderr)
    sys.exit(int(arg[0]))
"""


class Receiver:
    """A webhook receiver on 127.0.0.1 answering with the given statuses, then 200."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.statuses = list(statuses or [])
        self.received: list[tuple[dict[str, str], bytes]] = []
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def _handle(self, request: web.Request) -> web.Response:
        self.received.append((dict(request.headers), await request.read()))
        return web.Response(status=self.statuses.pop(0) if self.statuses else 200)

    async def __aenter__(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}/hook?token=abc"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with Receiver() as started:
        yield started


@pytest.fixture
def hook_script(tmp_path: Path) -> Path:
    path = tmp_path / "hook.py"
    path.write_text(HOOK_SCRIPT)
    return path


async def hook_events(api: Api, task_id: str, count: int = 1) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []

    async def recorded() -> bool:
        nonlocal found
        found = [e for e in await api.events(task_id) if e["event"] == "download.hook"]
        return len(found) >= count

    await eventually(recorded, 60, lambda: f"hook events: {found}")
    return found


def event_with(events: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(e for e in events if e["event"] == name)


# -- webhook ----------------------------------------------------------------------------


async def test_webhook_posts_the_completed_event_signed_with_the_secret(
    make_api: MakeApi, origin: Origin, receiver: Receiver
) -> None:
    api = await make_api(webhook_url=receiver.url, webhook_secret=SECRET)
    task = await api.submit(origin.url("/file/a.bin", size=50_000))
    await api.wait_for(task["task_id"], "completed")
    [hook] = await hook_events(api, task["task_id"])

    [(headers, body)] = receiver.received
    expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["X-Progress-Signature"], expected)
    assert headers["Content-Type"] == "application/json"
    history = await api.events(task["task_id"])
    completed = event_with(history, "download.completed")
    # Exactly the event as history and the WebSocket show it.
    assert json.loads(body) == completed
    assert headers["X-Progress-Event"] == "download.completed"

    assert hook["hook"] == {
        "kind": "webhook",
        "ok": True,
        "status": 200,
        "attempts": 1,
        "message": "HTTP 200",
        "for_seq": completed["seq"],
    }
    assert hook["seq"] > completed["seq"]
    assert hook["state"] == "completed"
    assert (await api.task(task["task_id"]))["state"] == "completed"


@pytest.mark.parametrize(
    ("statuses", "ok", "attempts", "status"),
    [
        ([500, 503, 200], True, 3, 200),
        ([500] * 5, False, 5, 500),
        ([404], False, 1, 404),  # a client error is not retried
    ],
)
async def test_webhook_retries_with_backoff_and_a_failure_never_fails_the_download(
    make_api: MakeApi,
    origin: Origin,
    statuses: list[int],
    ok: bool,
    attempts: int,
    status: int,
) -> None:
    async with Receiver(statuses) as receiver:
        api = await make_api(webhook_url=receiver.url, webhook_secret=SECRET, retry_base_delay=0.02)
        task = await api.submit(origin.url("/file/b.bin", size=10_000))
        [hook] = await hook_events(api, task["task_id"])
        assert len(receiver.received) == attempts
        # Every attempt carries the same body and signature.
        assert len({body for _, body in receiver.received}) == 1
    assert hook["hook"]["ok"] is ok
    assert hook["hook"]["attempts"] == attempts
    assert hook["hook"]["status"] == status
    assert (await api.task(task["task_id"]))["state"] == "completed"


async def test_webhook_hears_only_the_final_error(
    make_api: MakeApi, origin: Origin, receiver: Receiver
) -> None:
    api = await make_api(
        webhook_url=receiver.url, webhook_secret=SECRET, retry_base_delay=0.02, max_retries=2
    )
    task = await api.submit(origin.url("/file/c.bin", size=1000, status=503))
    await api.wait_for(task["task_id"], "failed")
    await hook_events(api, task["task_id"])
    history = await api.events(task["task_id"])
    # Two retried attempts, then the final error: only that one is delivered.
    assert [(e["event"], e["state"]) for e in history if e["event"].startswith("download.re")] == [
        ("download.retrying", "downloading"),
        ("download.retrying", "downloading"),
    ]
    assert [e["state"] for e in history if e["event"] == "download.error"] == ["failed"]
    [(_, body)] = receiver.received
    sent = json.loads(body)
    assert sent["event"] == "download.error" and sent["state"] == "failed"
    assert sent["error"]["type"] == "http_error"


# -- command ----------------------------------------------------------------------------


async def test_on_complete_command_is_told_the_task_in_its_environment(
    make_api: MakeApi,
    origin: Origin,
    hook_script: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The server's own settings must not leak into the command, a webhook secret least of all.
    monkeypatch.setenv("PROGRESS_SERVER_WEBHOOK_SECRET", "must-not-leak")
    out = tmp_path / "env.json"
    api = await make_api(on_complete=(sys.executable, str(hook_script), str(out)))
    task = await api.submit(origin.url("/file/report.bin", size=20_000))
    done = await api.wait_for(task["task_id"], "completed")
    [hook] = await hook_events(api, task["task_id"])
    assert hook["hook"] == {
        "kind": "command",
        "ok": True,
        "exit_code": 0,
        "attempts": 1,
        "message": "exit status 0",
        "for_seq": event_with(await api.events(task["task_id"]), "download.completed")["seq"],
    }

    env = json.loads(out.read_text())["env"]
    assert env["PROGRESS_SERVER_TASK_ID"] == task["task_id"]
    assert env["PROGRESS_SERVER_STATE"] == "completed"
    assert Path(env["PROGRESS_SERVER_FILE"]) == api.settings.downloads_dir / "report.bin"
    assert (
        Path(env["PROGRESS_SERVER_FILE"]).read_bytes()
        == (api.settings.downloads_dir / done["filename"]).read_bytes()
    )
    assert env["PROGRESS_SERVER_FILENAME"] == "report.bin"
    assert env["PROGRESS_SERVER_TASK_URL"] == task["url"]
    assert env["PROGRESS_SERVER_SIZE_MB"] == str(done["result"]["size_mb"])
    assert json.loads(env["PROGRESS_SERVER_EVENT"])["result"] == done["result"]
    assert "PROGRESS_SERVER_WEBHOOK_SECRET" not in env


async def test_on_complete_command_hears_a_final_failure(
    make_api: MakeApi, origin: Origin, hook_script: Path, tmp_path: Path
) -> None:
    out = tmp_path / "env.json"
    api = await make_api(on_complete=(sys.executable, str(hook_script), str(out)))
    task = await api.submit(origin.url("/file/missing.bin", status=404))
    await api.wait_for(task["task_id"], "failed")
    await hook_events(api, task["task_id"])
    env = json.loads(out.read_text())["env"]
    assert env["PROGRESS_SERVER_STATE"] == "failed"
    assert env["PROGRESS_SERVER_ERROR_TYPE"] == "http_error"
    assert "404" in env["PROGRESS_SERVER_ERROR_MESSAGE"]
    assert env["PROGRESS_SERVER_FILE"] == ""


@pytest.mark.parametrize(
    ("args", "time_limit", "exit_code", "says"),
    [
        # A generous limit: a loaded machine may take seconds to start Python.
        (["exit", "3"], 60.0, 3, "boom: the hook went wrong"),
        (["sleep", "60"], 0.5, None, "killed after 0.5 s"),
    ],
)
async def test_failing_command_is_reported_and_the_task_stays_completed(
    make_api: MakeApi,
    origin: Origin,
    hook_script: Path,
    tmp_path: Path,
    args: list[str],
    time_limit: float,
    exit_code: int | None,
    says: str,
) -> None:
    argv = (sys.executable, str(hook_script), str(tmp_path / "env.json"), *args)
    api = await make_api(on_complete=argv, hook_timeout=time_limit)
    task = await api.submit(origin.url("/file/d.bin", size=1000))
    [hook] = await hook_events(api, task["task_id"])
    assert hook["hook"]["ok"] is False
    assert says in hook["hook"]["message"]
    assert hook["hook"]["exit_code"] == exit_code
    assert (await api.task(task["task_id"]))["state"] == "completed"


async def test_a_slow_hook_holds_up_neither_completion_nor_the_next_task(
    make_api: MakeApi, origin: Origin, hook_script: Path, tmp_path: Path
) -> None:
    gate = tmp_path / "open"
    argv = (sys.executable, str(hook_script), str(tmp_path / "env.json"), "gate", str(gate))
    api = await make_api(on_complete=argv, max_concurrent=1)
    first = await api.submit(origin.url("/file/e1.bin", size=1000))
    second = await api.submit(origin.url("/file/e2.bin", size=1000))
    await api.wait_for(first["task_id"], "completed")
    await api.wait_for(second["task_id"], "completed")
    # Both done while the first task's hook is still blocked.
    assert not [e for e in await api.events() if e["event"] == "download.hook"]
    gate.touch()
    await hook_events(api, first["task_id"])
    await hook_events(api, second["task_id"])
