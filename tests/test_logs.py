"""Server logs: one line per task transition, JSON or text, and never a secret.

A real server subprocess is given everything that must stay out of its logs: API keys
(good and bad), a page login's session cookie, a webhook secret, and download URLs with
credentials in their query strings. Then its whole log is searched for them.
"""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.apiclient import eventually
from tests.origins import Origin
from tests.serverproc import ServerProcess, create_key

TASK_LOGGER = "progress_server.tasks"
# The guide's and the contract's lifecycle events; others (e.g. hook deliveries) are not
# task transitions.
TRANSITIONS = {
    "download.queued",
    "download.started",
    "download.processing",
    "download.completed",
    "download.retrying",
    "download.error",
    "download.cancelled",
    "download.paused",
}
_TEXT_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ (\S+): (.*)$")


def serve_options() -> str:
    return subprocess.run(
        [sys.executable, "-m", "progress_server", "serve", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


class Client:
    def __init__(self, session: aiohttp.ClientSession, base_url: str, key: str) -> None:
        self.session = session
        self.base_url = base_url
        self.key = key

    async def call(self, method: str, path: str, status: int = 200, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.key}"}
        async with self.session.request(
            method, self.base_url + path, headers=headers, **kwargs
        ) as resp:
            body = await resp.text()
            assert resp.status == status, f"{method} {path}: {resp.status} {body}"
            return json.loads(body) if body else None

    async def submit(self, url: str) -> str:
        task = await self.call("POST", "/api/downloads", 201, json={"url": url})
        return str(task["task_id"])

    async def wait(self, task_id: str, *states: str) -> dict[str, Any]:
        task: dict[str, Any] = {}

        async def reached() -> bool:
            nonlocal task
            task = await self.call("GET", f"/api/downloads/{task_id}")
            return task["state"] in states

        await eventually(reached, 60, lambda: f"never {states}: {task}")
        return task


def parse_lines(text: str, log_format: str) -> list[tuple[str, str]]:
    """(logger, message) of every line; fails on a line that is not in the format."""
    parsed = []
    for line in text.splitlines():
        if not line.strip():
            continue
        if log_format == "json":
            entry = json.loads(line)
            assert set(entry) >= {"time", "level", "logger", "message"}, line
            parsed.append((entry["logger"], entry["message"]))
        else:
            match = _TEXT_LINE.match(line)
            if match is None:  # a traceback's continuation lines belong to the line above
                continue
            parsed.append((match.group(1), match.group(2)))
    return parsed


@pytest.mark.timeout(180)
@pytest.mark.parametrize("log_format", ["json", "text"])
async def test_one_line_per_transition_and_no_secrets(
    tmp_path: Path, origin: Origin, log_format: str
) -> None:
    key = create_key(tmp_path, "user")
    admin_key = create_key(tmp_path, "ops", admin=True)
    wrong_key = "psk_" + secrets.token_urlsafe(32)
    token = "tok" + secrets.token_hex(12)
    webhook_secret = "whsec" + secrets.token_hex(12)
    args = ["--log-format", log_format, "--max-retries", "2"]
    if "--webhook-secret" in serve_options():
        hook_url = origin.url("/hook", hooktoken=token)
        args += ["--webhook", hook_url, "--webhook-secret", webhook_secret]
    server = ServerProcess(tmp_path, *args)
    server.start()
    cookie_value = ""
    try:
        async with aiohttp.ClientSession() as session:
            user = Client(session, server.base_url, key)
            admin = Client(session, server.base_url, admin_key)
            good = await user.submit(origin.url(size=200_000, token=token))
            missing = await user.submit(origin.url(status=404, token=token))
            dropped = await user.submit(
                origin.url(size=300_000, drop_after=100_000, drop_times=1, token=token)
            )
            slow = await user.submit(origin.url(size=5_000_000, rate=200_000, token=token))
            await user.wait(slow, "downloading")
            await user.call("POST", f"/api/downloads/{slow}/pause")
            await user.call("POST", f"/api/downloads/{slow}/resume")
            await user.call("POST", f"/api/downloads/{slow}/cancel")
            await user.wait(good, "completed")
            await user.wait(dropped, "completed")
            await user.wait(missing, "failed")

            bad = Client(session, server.base_url, wrong_key)
            await bad.call("GET", "/api/downloads", 401)
            async with session.post(
                server.base_url + "/login",
                data={"api_key": key},
                headers={"Origin": server.base_url},
                allow_redirects=False,
            ) as resp:
                assert resp.status in (302, 303), await resp.text()
                cookie_value = resp.cookies["progress_session"].value
            async with session.get(
                server.base_url + "/", headers={"Cookie": f"progress_session={cookie_value}"}
            ) as resp:
                assert resp.status == 200

            histories = {
                task_id: (await admin.call("GET", f"/api/downloads/{task_id}/events"))["events"]
                for task_id in (good, missing, dropped, slow)
            }
    finally:
        server.stop()

    log = server.log_text()
    for leaked in (key, admin_key, wrong_key, token, webhook_secret, cookie_value, "token="):
        assert leaked and leaked not in log, f"{leaked!r} is in the log:\n{log}"

    lines = parse_lines(log, log_format)
    for task_id, events in histories.items():
        transitions = [e["event"] for e in events if e["event"] in TRANSITIONS]
        logged = [msg for logger, msg in lines if logger == TASK_LOGGER and task_id in msg]
        assert len(logged) == len(transitions), (transitions, logged)
    failed_line = next(m for _, m in lines if missing in m and "failed" in m)
    assert "http_error" in failed_line
    assert any(dropped in m and "attempt 1 failed" in m for _, m in lines)
