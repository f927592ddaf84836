"""--on-complete: run the operator's command (argv, no shell) when a task finishes."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Sequence
from pathlib import Path

from progress_server.models import Event, EventName, Task
from progress_server.notifications.hookresult import HookOutcome
from progress_server.processing.processes import run_tool

ENV_PREFIX = "PROGRESS_SERVER_"


def hook_environment(event: Event, task: Task | None, downloads_dir: Path) -> dict[str, str]:
    """The server's environment without its own PROGRESS_SERVER_* settings (a webhook
    secret among them), plus what the command is told about the task."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    result = event.body.get("result") or {}
    error = event.body.get("error") or {}
    filename = result.get("filename") if event.name is EventName.COMPLETED else None
    told = {
        "TASK_ID": event.task_id,
        "STATE": event.state.value,
        "EVENT": json.dumps(event.to_wire()),
        # Absolute: the command runs in the downloads folder, and --data-dir may be relative.
        "FILE": str((downloads_dir / filename).absolute()) if filename else "",
        "FILENAME": filename or "",
        # Not _URL: the CLI client reads PROGRESS_SERVER_URL as the server to talk to.
        "TASK_URL": task.url if task else "",
        "SIZE_MB": _text(result.get("size_mb")),
        "DURATION_SECONDS": _text(result.get("duration_seconds")),
        "ERROR_TYPE": _text(error.get("type")),
        "ERROR_MESSAGE": _text(error.get("message")),
    }
    env.update({ENV_PREFIX + key: value for key, value in told.items()})
    return env


def _text(value: object) -> str:
    return "" if value is None else str(value)


async def run_command(
    argv: Sequence[str], env: dict[str, str], cwd: Path, time_limit: float
) -> HookOutcome:
    try:
        async with asyncio.timeout(time_limit):
            done = await run_tool(argv, env=env, cwd=cwd, stdout_limit=0)
    except TimeoutError:
        return HookOutcome("command", False, 1, f"killed after {time_limit:g} s (--hook-timeout)")
    except OSError as exc:
        return HookOutcome("command", False, 1, f"cannot run {argv[0]}: {exc.strerror or exc}")
    if done.returncode == 0:
        return HookOutcome("command", True, 1, "exit status 0", exit_code=0)
    return HookOutcome("command", False, 1, done.last_error_line, exit_code=done.returncode)
