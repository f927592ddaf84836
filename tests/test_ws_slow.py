"""A client that stops reading costs nobody else anything: its own queue is bounded, it is
closed with 1013 when lifecycle events no longer fit, and it resumes with `after_seq`."""

from __future__ import annotations

import asyncio
import json
import socket

import aiohttp
import websockets
import websockets.asyncio.client

from progress_server.appkeys import WS_HUB
from tests.apiclient import Api
from tests.conftest import MakeApi
from tests.origins import Origin
from tests.wsclient import JSON, LIFECYCLE, WS_PATH, flatten, recv

QUEUE_LIMIT = 100
READERS = 10
TASKS = 12
FAILURES = 200


def _lifecycle(messages: list[JSON]) -> list[int]:
    return [m["seq"] for m in messages if m["event"] in LIFECYCLE and "processing" not in m]


async def _read_all(ws: aiohttp.ClientWebSocketResponse, task_ids: set[str]) -> list[JSON]:
    """Read until every task has completed."""
    seen: list[JSON] = []
    pending = set(task_ids)
    while pending:
        for message in flatten(await recv(ws, 120)):
            seen.append(message)
            if message["event"] == "download.completed":
                pending.discard(message["task_id"])
    return seen


async def _stored_seqs(api: Api) -> list[int]:
    events: list[JSON] = []
    while page := await api.events(after_seq=events[-1]["seq"] if events else 0):
        events += page
    return [e["seq"] for e in events]


async def test_a_client_that_never_reads_is_closed_with_1013_and_nobody_else_notices(
    make_api: MakeApi, origin: Origin
) -> None:
    api = await make_api(
        ws_queue_limit=QUEUE_LIMIT,
        max_concurrent=TASKS,
        max_per_host=TASKS,
        max_retries=FAILURES + 5,
        retry_base_delay=0.001,
        retry_max_delay=0.001,
    )
    hub = api.client.app[WS_HUB]
    url = str(api.client.make_url(WS_PATH)).replace("http://", "ws://", 1)

    # The slow client: a tiny receive buffer, and a library queue of one message, so once
    # it stops calling recv() the server's writes back up quickly.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((api.client.host, api.client.port))
    slow = await websockets.asyncio.client.connect(
        url, sock=sock, additional_headers=api.auth(), max_queue=1
    )
    await slow.send(json.dumps({"action": "subscribe", "task_id": "*"}))

    readers = [await api.client.ws_connect(WS_PATH, headers=api.auth()) for _ in range(READERS)]
    for ws in readers:
        await ws.send_json({"action": "subscribe", "task_id": "*"})
        assert (await recv(ws))["event"] == "subscribed"
    assert len(hub) == READERS + 1

    tasks = [
        await api.submit(origin.url(size=20_000, status=503, fail_times=FAILURES, seed=i))
        for i in range(TASKS)
    ]
    task_ids = {t["task_id"] for t in tasks}
    reading = [asyncio.create_task(_read_all(ws, task_ids)) for ws in readers]

    # The server's memory for sockets stays bounded: no outbox ever holds more than its limit.
    most_queued = 0
    while len(hub) > READERS:
        most_queued = max(most_queued, hub.queued_frames)
        await asyncio.sleep(0.005)
        assert not all(r.done() for r in reading), "all events went out; the slow one stayed"

    # The slow client wakes up: it gets what was already in flight, then the 1013 close.
    slow_seen: list[JSON] = []
    try:
        while True:
            slow_seen += flatten(json.loads(await asyncio.wait_for(slow.recv(), 60)))
    except websockets.ConnectionClosed as closed:
        assert closed.rcvd is not None and closed.rcvd.code == 1013, closed

    results = await asyncio.wait_for(asyncio.gather(*reading), 120)
    for ws in readers:
        await ws.close()
    stored = await _stored_seqs(api)
    assert len(stored) >= TASKS * FAILURES
    for seen in results:
        # Every reader got every lifecycle event, once and in order.
        assert _lifecycle(seen) == stored
    # Every outbox at most full, plus the shared log (at most twice the limit).
    assert most_queued <= (READERS + 1) * QUEUE_LIMIT + 2 * QUEUE_LIMIT

    # It comes back with after_seq and misses nothing.
    slow_events = [m for m in slow_seen if m["event"].startswith("download.")]
    last_seq = slow_events[-1]["seq"] if slow_events else slow_seen[0]["seq"]
    back = await api.client.ws_connect(WS_PATH, headers=api.auth())
    await back.send_json({"action": "subscribe", "task_id": "*", "after_seq": last_seq})
    resumed: list[JSON] = []
    while not resumed or resumed[-1]["event"] != "subscribed":
        resumed += flatten(await recv(back, 60))
    await back.close()
    assert _lifecycle(slow_seen) + _lifecycle(resumed) == stored
