"""One key never sees or touches another key's task, by any route, action or socket.

For every documented route that names a task, and every WebSocket action that takes one,
key A's answer for key B's task must be exactly its answer for a task that does not exist
(a 404 or an error, never a hint); B's task must be untouched afterwards; and B's task must
not show up in anything A can list: the task list, a batch poll, the event history, a
replay, a `*` subscription (live, new tasks included) or the status page.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from typing import Any

import aiohttp

from progress_server.openapi import build_document
from tests.apiclient import Api
from tests.origins import Origin

WS_PATH = "/api/progress/ws"


def task_operations() -> list[tuple[str, str]]:
    """(method, path) of every documented /api operation with a {task_id} in its path."""
    return [
        (method.upper(), path)
        for path, operations in build_document()["paths"].items()
        if "{task_id}" in path and path.startswith("/api/")
        for method in operations
        if method in ("get", "post", "delete")
    ]


async def answer(api: Api, method: str, path: str, key: str) -> tuple[int, Any]:
    resp = await api.call(method, path, key=key)
    text = await resp.text()
    return resp.status, text


async def receive_until(ws: aiohttp.ClientWebSocketResponse, event: str) -> list[dict[str, Any]]:
    """Frames up to and including the first `event` frame (batch frames unpacked)."""
    frames: list[dict[str, Any]] = []
    async with asyncio.timeout(30):
        while True:
            message = await ws.receive_json()
            inner = message["events"] if message.get("event") == "batch" else [message]
            frames += inner
            if any(f.get("event") == event for f in inner):
                return frames


async def test_key_a_cannot_see_or_touch_key_b_tasks(api: Api, origin: Origin) -> None:
    key_a = api.key
    key_b = await api.new_key("b")
    admin = await api.new_key("admin", admin=True)
    mine = await api.submit(origin.url(size=50_000, seed=1), key=key_a, filename="mine.bin")
    theirs = await api.submit(origin.url(size=60_000, seed=2), key=key_b, filename="theirs.bin")
    await api.wait_for(mine["task_id"], "completed")
    b_done = await api.wait_for(theirs["task_id"], "completed", key=key_b)
    b_id = theirs["task_id"]
    absent = str(uuid.uuid4())

    # Every route: B's task answers A exactly as a task that does not exist.
    operations = task_operations()
    assert len(operations) == 9  # record, delete, 4 actions, file, events, poll
    for method, path in operations:
        foreign = await answer(api, method, path.replace("{task_id}", b_id), key_a)
        missing = await answer(api, method, path.replace("{task_id}", absent), key_a)
        assert foreign[0] == 404, (method, path, foreign)
        assert foreign == (missing[0], missing[1].replace(absent, b_id)), (method, path)
    # ...and none of those calls changed it (not cancelled, not deleted).
    assert await api.task(b_id, key=key_b) == b_done
    assert (await api.call("GET", f"/api/downloads/{b_id}/file", key=key_b)).status == 200

    # Nothing A can list shows it.
    listed = await api.tasks("?limit=500", key=key_a)
    assert [t["task_id"] for t in listed] == [mine["task_id"]]
    batch = await api.json(
        "GET", f"/api/progress?task_id={b_id}&task_id={mine['task_id']}", key=key_a
    )
    assert [t["task_id"] for t in batch["tasks"]] == [mine["task_id"]]
    assert batch["missing"] == [b_id]
    history = await api.json("GET", "/api/events?after_seq=0", key=key_a)
    assert history["events"] and all(e["task_id"] != b_id for e in history["events"])
    admin_view = await api.tasks("?limit=500", key=admin)
    assert b_id in {t["task_id"] for t in admin_view}  # the task is real

    # The WebSocket: the same for every action that names a task, and no leak through `*`.
    headers = {"Authorization": f"Bearer {key_a}"}
    async with api.client.ws_connect(WS_PATH, headers=headers) as ws:
        for frame in (
            {"action": "subscribe"},
            {"action": "subscribe", "after_seq": 0},
            {"action": "unsubscribe"},
        ):
            replies = []
            for task_id in (b_id, absent):
                await ws.send_json({**frame, "task_id": task_id})
                reply = await ws.receive_json()
                replies.append(reply)
            assert replies[0]["event"] == "error", (frame, replies)
            assert replies[0]["error"]["type"] == "not_found", (frame, replies)
            assert replies[0] == {
                **replies[1],
                "error": {
                    **replies[1]["error"],
                    "message": replies[1]["error"]["message"].replace(absent, b_id),
                },
            }, (frame, replies)

        # Replay from the start, then live: A's events only, B's new task never appears.
        await ws.send_json({"action": "subscribe", "task_id": "*", "after_seq": 0})
        seen = await receive_until(ws, "subscribed")
        second_b = await api.submit(origin.url(size=40_000, seed=3), key=key_b)
        second_a = await api.submit(origin.url(size=40_000, seed=4), key=key_a)
        await api.wait_for(second_b["task_id"], "completed", key=key_b)
        seen += await receive_until(ws, "download.completed")
        await ws.send_json({"action": "ping"})
        seen += await receive_until(ws, "pong")
    task_ids = {f.get("task_id") for f in seen}
    assert mine["task_id"] in task_ids and second_a["task_id"] in task_ids
    assert b_id not in task_ids and second_b["task_id"] not in task_ids

    # The status page, logged in with A's key.
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar) as browser:
        base = str(api.client.make_url("/"))
        async with browser.post(base + "login", data={"api_key": key_a}) as resp:
            assert resp.status == 200  # followed the redirect to the task table
            page = await resp.text()
        assert mine["task_id"] in page and "mine.bin" in page
        assert b_id not in page and "theirs.bin" not in page
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page)
        assert csrf is not None
        for action in ("pause", "resume", "cancel", "retry", "delete"):
            async with browser.post(
                f"{base}tasks/{b_id}/{action}", data={"csrf_token": csrf.group(1)}
            ) as resp:
                assert resp.status == 404, (action, resp.status)
        # Cookie-authenticated API calls are held to the same rule.
        async with browser.get(f"{base}api/downloads/{b_id}") as resp:
            assert resp.status == 404
    assert await api.task(b_id, key=key_b) == b_done
