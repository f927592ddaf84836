"""Small helpers for WebSocket tests: read JSON frames with generous timeouts, flatten batch
frames, and wait for a frame that matches."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import aiohttp

JSON = dict[str, Any]
WS_PATH = "/api/progress/ws"
LIFECYCLE = frozenset(
    {
        "download.queued",
        "download.started",
        "download.processing",
        "download.completed",
        "download.retrying",
        "download.error",
        "download.cancelled",
        "download.paused",
    }
)


async def recv(ws: aiohttp.ClientWebSocketResponse, within: float = 30) -> JSON:
    """The next frame as JSON; fails on a close or a non-text frame."""
    msg = await ws.receive(timeout=within)
    assert msg.type is aiohttp.WSMsgType.TEXT, f"expected a text frame, got {msg.type}: {msg}"
    frame = json.loads(msg.data)
    assert isinstance(frame, dict), frame
    return frame


def flatten(frame: JSON) -> list[JSON]:
    if frame.get("event") == "batch":
        events: list[JSON] = frame["events"]
        return events
    return [frame]


async def recv_until(
    ws: aiohttp.ClientWebSocketResponse,
    done: Callable[[JSON], bool],
    within: float = 60,
) -> list[JSON]:
    """Every message (batch frames flattened) up to and including the first for which
    `done` is true."""
    seen: list[JSON] = []
    deadline = time.monotonic() + within
    while True:
        left = deadline - time.monotonic()
        assert left > 0, f"no matching frame within {within}s; last frames: {seen[-5:]}"
        for message in flatten(await recv(ws, left)):
            seen.append(message)
            if done(message):
                return seen


def is_final_event(task_id: str) -> Callable[[JSON], bool]:
    finals = ("download.completed", "download.cancelled")

    def check(message: JSON) -> bool:
        if message.get("task_id") != task_id:
            return False
        failed = message.get("event") == "download.error" and message.get("state") == "failed"
        return message.get("event") in finals or failed

    return check


def assert_error_frame(frame: JSON, error_type: str) -> None:
    assert set(frame) == {"event", "error"}, frame
    assert frame["event"] == "error", frame
    error = frame["error"]
    assert set(error) == {"type", "message"}, frame
    assert error["type"] == error_type, frame
    assert isinstance(error["message"], str) and error["message"], frame
