"""The WebSocket as a guide-following client sees it: auth, subscribe/unsubscribe, the
guide's event shapes, ordering, batching, errors, limits."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import time
import uuid
from datetime import datetime
from typing import Any

import aiohttp
import pytest
import websockets.asyncio.client

from progress_server.appkeys import STORE
from tests.apiclient import Api
from tests.conftest import MakeApi
from tests.origins import Origin
from tests.wsclient import (
    JSON,
    WS_PATH,
    assert_error_frame,
    flatten,
    is_final_event,
    recv,
    recv_until,
)

ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
PROGRESS_KEYS = {"downloaded_bytes", "total_bytes", "percentage", "speed_mbps", "eta_seconds"}


async def connect(api: Api, key: str | None = None) -> aiohttp.ClientWebSocketResponse:
    headers = {} if key == "" else api.auth(key)
    return await api.client.ws_connect(WS_PATH, headers=headers)


def ws_url(api: Api) -> str:
    return str(api.client.make_url(WS_PATH)).replace("http://", "ws://", 1)


# -- the guide's example, with a plain `websockets` client ----------------------------------


async def test_guide_client_sees_a_download_from_started_to_completed(
    make_api: MakeApi, origin: Origin
) -> None:
    api = await make_api(max_concurrent=1, progress_interval=0.4)
    # One slot, taken by a slow download, so our task waits in the queue while we subscribe
    # as the guide does, and we see it start.
    blocker = await api.submit(origin.url(size=50_000_000, rate=200_000, seed=1))
    await api.wait_for(blocker["task_id"], "downloading")
    task = await api.submit(origin.url(size=3_000_000, rate=1_500_000, seed=2))
    task_id = task["task_id"]

    async with websockets.asyncio.client.connect(ws_url(api), additional_headers=api.auth()) as ws:
        await ws.send(json.dumps({"action": "subscribe", "task_id": task_id}))
        subscribed = json.loads(await asyncio.wait_for(ws.recv(), 30))
        assert subscribed["event"] == "subscribed"
        assert subscribed["task_id"] == task_id
        assert subscribed["state"] == "pending"
        assert set(subscribed["progress"]) == PROGRESS_KEYS
        assert isinstance(subscribed["seq"], int)

        await api.json("POST", f"/api/downloads/{blocker['task_id']}/cancel")
        frames: list[JSON] = []
        while not frames or frames[-1]["event"] != "download.completed":
            frames.append(json.loads(await asyncio.wait_for(ws.recv(), 60)))

    names = [f["event"] for f in frames]
    assert names[0] == "download.started"
    assert frames[0].keys() == {"event", "task_id", "timestamp", "seq", "state"}
    assert frames[0]["state"] == "downloading"
    progress = [f for f in frames if f["event"] == "download.progress"]
    assert len(progress) >= 3, names
    for frame in progress:
        # The guide's progress event, plus the contract's `seq` and `state`.
        assert frame.keys() == {"event", "task_id", "progress", "timestamp", "seq", "state"}
        assert frame.keys() >= {"event", "task_id", "progress", "timestamp"}
        assert frame["progress"].keys() == PROGRESS_KEYS
        assert frame["progress"]["total_bytes"] == 3_000_000
        assert ISO_Z.match(frame["timestamp"]), frame
        # What the guide's onmessage prints.
        assert isinstance(frame["progress"]["percentage"], float)
    percentages = [f["progress"]["percentage"] for f in progress]
    assert percentages == sorted(percentages)
    assert 0 < percentages[len(percentages) // 2] < 100
    # The last progress frame before completion shows 100 %.
    last_progress = max(i for i, name in enumerate(names) if name == "download.progress")
    assert frames[last_progress]["progress"]["percentage"] == 100.0
    assert frames[last_progress]["progress"]["downloaded_bytes"] == 3_000_000
    assert last_progress < names.index("download.completed")

    completed = frames[-1]
    assert completed.keys() == {"event", "task_id", "result", "timestamp", "seq", "state"}
    assert completed["state"] == "completed"
    assert completed["result"] == {
        "filename": completed["result"]["filename"],
        "size_mb": 2.86,
        "duration_seconds": None,
    }
    seqs = [f["seq"] for f in frames]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert seqs[0] > subscribed["seq"]

    # Progress for one task comes at most every --progress-interval (0.4 s here), the
    # final 100 % frame included. Timestamps have millisecond precision.
    stamps = [_epoch(f["timestamp"]) for f in progress]
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert min(gaps) >= 0.4 - 0.002, gaps


def _epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


# -- auth --------------------------------------------------------------------------------


async def test_auth_by_first_frame(api: Api) -> None:
    ws = await connect(api, key="")
    await ws.send_json({"action": "ping"})
    assert_error_frame(await recv(ws), "unauthorized")
    await ws.send_json({"action": "subscribe", "task_id": "*"})
    assert_error_frame(await recv(ws), "unauthorized")
    await ws.send_json({"action": "auth", "api_key": "psk_not-a-real-key"})
    assert_error_frame(await recv(ws), "unauthorized")
    await ws.send_json({"action": "auth", "api_key": api.key})
    assert await recv(ws) == {"event": "authenticated"}
    await ws.send_json({"action": "ping"})
    assert await recv(ws) == {"event": "pong"}
    await ws.send_json({"action": "subscribe", "task_id": "*"})
    assert (await recv(ws))["event"] == "subscribed"
    await ws.close()


async def test_a_wrong_bearer_key_is_refused_before_the_upgrade(api: Api) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await connect(api, key="psk_wrong")
    assert refused.value.status == 401


async def test_a_key_hears_only_about_its_own_tasks(make_api: MakeApi, origin: Origin) -> None:
    api = await make_api()
    other = await api.new_key("other")
    admin = await api.new_key("admin", admin=True)
    mine, theirs, all_seeing = [await connect(api, k) for k in (api.key, other, admin)]
    for ws in (mine, theirs, all_seeing):
        await ws.send_json({"action": "subscribe", "task_id": "*"})
        assert (await recv(ws))["event"] == "subscribed"

    task = await api.submit(origin.url(size=100_000))
    task_id = task["task_id"]
    for ws in (mine, all_seeing):
        seen = await recv_until(ws, is_final_event(task_id))
        assert seen[-1]["event"] == "download.completed"
        assert {m["task_id"] for m in seen} == {task_id}

    # Another key's task is answered exactly like a task that does not exist.
    await theirs.send_json({"action": "subscribe", "task_id": task_id})
    assert_error_frame(await recv(theirs), "not_found")
    await theirs.send_json({"action": "subscribe", "task_id": str(uuid.uuid4())})
    assert_error_frame(await recv(theirs), "not_found")
    # ...and "*" told it nothing: the next frame is the answer to its ping.
    await theirs.send_json({"action": "ping"})
    assert await recv(theirs) == {"event": "pong"}
    for ws in (mine, theirs, all_seeing):
        await ws.close()


# -- subscribe, unsubscribe --------------------------------------------------------------


async def test_star_snapshot_lists_unfinished_tasks_and_follows_new_ones(
    api: Api, origin: Origin
) -> None:
    slow = await api.submit(origin.url(size=20_000_000, rate=100_000))
    await api.wait_for(slow["task_id"], "downloading")
    ws = await connect(api)
    await ws.send_json({"action": "subscribe", "task_id": "*"})
    snapshot = await recv(ws)
    assert snapshot["event"] == "subscribed" and snapshot["task_id"] == "*"
    assert [t["task_id"] for t in snapshot["tasks"]] == [slow["task_id"]]
    assert snapshot["tasks"][0]["state"] == "downloading"
    assert set(snapshot["tasks"][0]["progress"]) == PROGRESS_KEYS

    later = await api.submit(origin.url(size=50_000))
    seen = await recv_until(ws, is_final_event(later["task_id"]))
    later_events = [m["event"] for m in seen if m["task_id"] == later["task_id"]]
    assert later_events[0] == "download.queued"
    assert later_events[-1] == "download.completed"
    await api.json("POST", f"/api/downloads/{slow['task_id']}/cancel")
    await recv_until(ws, is_final_event(slow["task_id"]))
    await ws.close()


async def test_unsubscribe_stops_the_events(api: Api, origin: Origin) -> None:
    task = await api.submit(origin.url(size=2_000_000, rate=1_000_000))
    task_id = task["task_id"]
    ws = await connect(api)
    await ws.send_json({"action": "subscribe", "task_id": task_id})
    assert (await recv(ws))["event"] == "subscribed"
    await recv_until(ws, lambda m: m["event"] == "download.progress")
    await ws.send_json({"action": "unsubscribe", "task_id": task_id})
    await recv_until(ws, lambda m: m["event"] == "unsubscribed")
    await api.wait_for(task_id, "completed")
    # Everything the task did after the unsubscribe went unsent: the next frame is the pong.
    await ws.send_json({"action": "ping"})
    assert await recv(ws) == {"event": "pong"}
    await ws.close()


async def test_unsubscribe_answers_with_the_task_id(api: Api, origin: Origin) -> None:
    task = await api.submit(origin.url(size=10_000))
    ws = await connect(api)
    for target in (task["task_id"], "*"):
        await ws.send_json({"action": "unsubscribe", "task_id": target})
        assert await recv(ws) == {"event": "unsubscribed", "task_id": target}
    await ws.close()


# -- batching ------------------------------------------------------------------------------


async def test_batch_mode_sends_every_event_in_batches_at_most_every_batch_ms(
    api: Api, origin: Origin
) -> None:
    ws = await connect(api)
    await ws.send_json({"action": "configure", "batch_ms": 300})
    assert await recv(ws) == {"event": "configured", "batch_ms": 300}
    await ws.send_json({"action": "subscribe", "task_id": "*"})
    first = await recv(ws)
    assert first["event"] == "batch" and first["events"][0]["event"] == "subscribed"

    started = time.monotonic()
    tasks = [await api.submit(origin.url(size=800_000, rate=1_000_000, seed=i)) for i in range(3)]
    pending = {t["task_id"] for t in tasks}
    batches = 0
    messages: list[JSON] = []
    while pending:
        frame = await recv(ws, 60)
        assert frame.keys() == {"event", "events"} and frame["event"] == "batch", frame
        batches += 1
        messages += frame["events"]
        pending -= {m["task_id"] for m in frame["events"] if is_final_event(m["task_id"])(m)}
    elapsed = time.monotonic() - started
    # At most one batch per 300 ms (+1 for the first, which may go at once).
    assert batches <= elapsed / 0.3 + 1
    for task in tasks:
        names = [m["event"] for m in messages if m["task_id"] == task["task_id"]]
        assert names[0] == "download.queued" and names[-1] == "download.completed", names
        assert "download.started" in names and "download.progress" in names
    seqs = [m["seq"] for m in messages]
    assert seqs == sorted(seqs)
    # Back to one event per frame.
    await ws.send_json({"action": "configure", "batch_ms": 0})
    configured = await recv(ws)
    assert configured["event"] == "batch"
    assert configured["events"] == [{"event": "configured", "batch_ms": 0}]
    await ws.send_json({"action": "ping"})
    assert await recv(ws) == {"event": "pong"}
    await ws.close()


# -- bad frames and limits -----------------------------------------------------------------

BAD_FRAMES: list[tuple[Any, str]] = [
    ("not json", "invalid_json"),
    ("", "invalid_json"),
    ("[1, 2]", "invalid_frame"),
    ('"subscribe"', "invalid_frame"),
    ("null", "invalid_frame"),
    ("{}", "invalid_request"),
    ('{"action": 5}', "invalid_request"),
    ('{"action": "dance"}', "unknown_action"),
    ('{"action": "subscribe"}', "invalid_request"),
    ('{"action": "subscribe", "task_id": 7}', "invalid_request"),
    ('{"action": "subscribe", "task_id": ""}', "invalid_request"),
    ('{"action": "subscribe", "task_id": "' + "a" * 500 + '"}', "invalid_request"),
    ('{"action": "subscribe", "task_id": "no-such-task"}', "not_found"),
    ('{"action": "subscribe", "task_id": "*", "after_seq": -1}', "invalid_request"),
    ('{"action": "subscribe", "task_id": "*", "after_seq": "3"}', "invalid_request"),
    ('{"action": "unsubscribe", "task_id": null}', "invalid_request"),
    ('{"action": "unsubscribe", "task_id": "no-such-task"}', "not_found"),
    ('{"action": "configure"}', "invalid_request"),
    ('{"action": "configure", "batch_ms": 1}', "invalid_request"),
    ('{"action": "configure", "batch_ms": true}', "invalid_request"),
    ('{"action": "configure", "batch_ms": 2.5}', "invalid_request"),
    ('{"action": "auth", "api_key": "x"}', "invalid_request"),
    (b"\x00\x01binary", "invalid_frame"),
]


async def test_bad_frames_get_an_error_frame_and_the_socket_stays_open(api: Api) -> None:
    ws = await connect(api)
    for frame, error_type in BAD_FRAMES:
        if isinstance(frame, bytes):
            await ws.send_bytes(frame)
        else:
            await ws.send_str(frame)
        answer = await recv(ws)
        assert_error_frame(answer, error_type)
    await ws.send_json({"action": "ping"})
    assert await recv(ws) == {"event": "pong"}
    await ws.close()


async def test_a_frame_over_64_kib_closes_with_1009(api: Api) -> None:
    ws = await connect(api)
    padded = json.dumps({"action": "ping", "pad": "x" * 60_000})
    await ws.send_str(padded)
    assert await recv(ws) == {"event": "pong"}
    await ws.send_str("x" * (64 * 1024 + 1))
    msg = await ws.receive(timeout=30)
    assert msg.type is aiohttp.WSMsgType.CLOSE
    assert ws.close_code == 1009


async def test_a_spamming_client_is_rate_limited_then_closed(api: Api) -> None:
    ws = await connect(api)
    try:
        for _ in range(1500):
            await ws.send_json({"action": "ping"})
    except ConnectionError:
        pass  # the server may hang up before the last ones are written
    answers: list[JSON] = []
    while True:
        msg = await ws.receive(timeout=30)
        if msg.type is not aiohttp.WSMsgType.TEXT:
            break
        answers.extend(flatten(json.loads(msg.data)))
    assert ws.close_code == 1008
    pongs = [a for a in answers if a == {"event": "pong"}]
    limited = [a for a in answers if a.get("error", {}).get("type") == "rate_limited"]
    assert 200 <= len(pongs) < 1000
    assert limited and len(pongs) + len(limited) == len(answers)


async def test_ping_answers_pong(api: Api) -> None:
    ws = await connect(api)
    await ws.send_json({"action": "ping"})
    assert await recv(ws) == {"event": "pong"}
    await ws.close()


async def test_revoking_a_key_closes_its_open_sockets(api: Api) -> None:
    ws = await connect(api)
    await ws.send_json({"action": "ping"})
    assert await recv(ws) == {"event": "pong"}
    assert await api.client.app[STORE].revoke_key("default")
    msg = await ws.receive(timeout=30)
    assert msg.type is aiohttp.WSMsgType.CLOSE, msg
    assert ws.close_code == 1008
