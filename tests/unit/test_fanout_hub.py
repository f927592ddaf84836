"""The fan-out hub on its own, with real sockets: a real EventBus over a real SQLite store
publishes, a small aiohttp app opens each socket on the hub as web/ws.py does (who the
client is comes from the query, so no keys are needed), and clients read over TCP.

What a client would notice: sockets in step get the same frames; a key sees only its own
events; answers keep their place among live events; batches are at least batch_ms apart;
a socket that stops reading holds up nobody, loses no lifecycle event while its outbox
has room, and is closed with 1013 when it has not."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import pytest
import websockets
import websockets.asyncio.client
from aiohttp import web
from pytest_aiohttp import AiohttpClient
from websockets.asyncio.client import ClientConnection

from progress_server.auth import KeyRing, Principal, hash_key
from progress_server.batchgrid import next_slot
from progress_server.events import EventBus
from progress_server.fanout import Hub
from progress_server.listener import Listener
from progress_server.models import EventName, Progress, TaskState
from progress_server.snapshots import SnapshotCache
from progress_server.store.sqlite import SqliteStore
from tests.apiclient import AppClient

JSON = dict[str, Any]
PEOPLE = {
    "admin": Principal(1, "admin", True),
    "alice": Principal(2, "alice", False),
    "bob": Principal(3, "bob", False),
}
TASK = {2: "task-of-alice", 3: "task-of-bob"}


class Bench:
    """The hub under test, its bus, and the sockets it opened, by the name the client gave."""

    def __init__(self, hub: Hub, client: AppClient) -> None:
        self.hub = hub
        self.bus = hub.bus
        self.client = client
        self.listeners: dict[str, Listener] = {}

    async def connect(
        self, name: str, who: str = "admin", batch_ms: int = 0
    ) -> aiohttp.ClientWebSocketResponse:
        """An aiohttp client socket subscribed to "*", past its `subscribed` answer."""
        query = {"name": name, "who": who, "batch_ms": str(batch_ms)}
        ws = await self.client.ws_connect("/ws", params=query)
        while not any(m["event"] == "subscribed" for m in flatten(await recv(ws))):
            pass
        return ws

    async def publish(self, owner: int = 1, lifecycle: bool = False, pad: int = 0) -> int:
        name = EventName.STARTED if lifecycle else EventName.PROGRESS
        body: JSON = {"pad": "x" * pad} if pad else {}
        progress = None if lifecycle else Progress(self.bus.last_seq, 10**9, 1e6)
        if progress is not None:
            body["progress"] = progress.to_wire()
        task_id = TASK.get(owner, f"task-{owner}")
        state = TaskState.DOWNLOADING
        event = await self.bus.publish(name, task_id, owner, state, body, progress=progress)
        return event.seq


async def recv(ws: aiohttp.ClientWebSocketResponse, within: float = 20) -> JSON:
    msg = await ws.receive(timeout=within)
    assert msg.type is aiohttp.WSMsgType.TEXT, msg
    frame: JSON = json.loads(msg.data)
    return frame


def flatten(frame: JSON) -> list[JSON]:
    events: list[JSON] = frame["events"] if frame.get("event") == "batch" else [frame]
    return events


async def read_until(ws: aiohttp.ClientWebSocketResponse, seq: int) -> tuple[list[str], list[JSON]]:
    """The raw frames and the events up to and including event `seq`."""
    frames: list[str] = []
    events: list[JSON] = []
    while not events or events[-1].get("seq", 0) < seq:
        msg = await ws.receive(timeout=20)
        assert msg.type is aiohttp.WSMsgType.TEXT, msg
        frames.append(msg.data)
        events += flatten(json.loads(msg.data))
    return frames, events


class Make(Protocol):
    """`await make_bench(queue_limit=...)`: a Bench on a fresh store, bus and hub."""

    async def __call__(self, queue_limit: int = 1000) -> Bench: ...


@pytest.fixture
async def make_bench(aiohttp_client: AiohttpClient, tmp_path: Path) -> AsyncIterator[Make]:
    stores: list[SqliteStore] = []
    hubs: list[Hub] = []

    async def make(queue_limit: int = 1000) -> Bench:
        store = SqliteStore(tmp_path / f"progress-{len(stores)}.db")
        await store.open()
        stores.append(store)
        bus = EventBus(store, SnapshotCache())
        await bus.start()
        hub = Hub(bus, queue_limit)
        hubs.append(hub)
        bench: Bench

        async def route(request: web.Request) -> web.WebSocketResponse:
            ws = web.WebSocketResponse(compress=False)
            writer = await ws.prepare(request)
            transport = request.transport
            assert transport is not None
            sndbuf = request.query.get("sndbuf")
            if sndbuf:
                sock = transport.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, int(sndbuf))
            listener = hub.open(ws, transport, writer.drain, transport.abort)
            bench.listeners[request.query["name"]] = listener
            listener.principal = PEOPLE[request.query["who"]]
            batch_ms = int(request.query.get("batch_ms", "0"))
            if batch_ms:
                listener.configure(batch_ms)
            listener.subscribe("*", None)
            try:
                async for msg in ws:
                    if msg.data == "ping":
                        listener.reply({"event": "pong"})
            finally:
                await listener.finish()
            return ws

        app = web.Application()
        app.router.add_get("/ws", route)
        bench = Bench(hub, await aiohttp_client(app))
        return bench

    yield make
    for hub in hubs:
        await hub.stop()
    for store in stores:
        await store.close()


async def test_sockets_in_step_get_the_same_frames_with_every_event_in_order(
    make_bench: Make,
) -> None:
    bench = await make_bench()
    sockets = [await bench.connect(f"c{i}", batch_ms=50) for i in range(20)]
    # Each socket sent its `subscribed` answer at an instant of its own; one event later
    # (and a quiet moment) they are all in step.
    warm_up = await bench.publish()
    await asyncio.gather(*(read_until(ws, warm_up) for ws in sockets))
    await asyncio.sleep(0.12)
    seqs = []
    for round_ in range(6):
        for _ in range(5):
            seqs.append(await bench.publish(lifecycle=round_ % 2 == 1))
        await asyncio.sleep(0.03)
    seen = await asyncio.gather(*(read_until(ws, seqs[-1]) for ws in sockets))
    frames, events = seen[0]
    assert [e["seq"] for e in events] == seqs
    assert all(json.loads(f)["event"] == "batch" for f in frames)
    # Every socket got the very same frames: same content, split at the same instants.
    assert all(other_frames == frames for other_frames, _ in seen[1:])
    for ws in sockets:
        await ws.close()


async def test_a_key_sees_only_its_own_events_and_an_admin_sees_all(make_bench: Make) -> None:
    bench = await make_bench()
    alice = await bench.connect("alice", who="alice", batch_ms=20)
    bob_plain = await bench.connect("bob", who="bob")
    admin = await bench.connect("admin", batch_ms=20)
    by_owner: dict[int, list[int]] = {2: [], 3: []}
    for i in range(12):
        owner = 2 if i % 3 else 3
        by_owner[owner].append(await bench.publish(owner=owner, lifecycle=i % 4 == 0))
    everything = sorted(by_owner[2] + by_owner[3])
    _, alice_events = await read_until(alice, by_owner[2][-1])
    _, bob_events = await read_until(bob_plain, by_owner[3][-1])
    _, admin_events = await read_until(admin, everything[-1])
    assert [e["seq"] for e in alice_events] == by_owner[2]
    assert [e["seq"] for e in bob_events] == by_owner[3]
    assert [e["seq"] for e in admin_events] == everything
    for ws in (alice, bob_plain, admin):
        await ws.close()


async def test_plain_mode_sends_one_frame_per_event(make_bench: Make) -> None:
    bench = await make_bench()
    ws = await bench.connect("plain")
    seqs = [await bench.publish(lifecycle=i == 3) for i in range(8)]
    frames, events = await read_until(ws, seqs[-1])
    assert len(frames) == len(seqs)
    assert [e["seq"] for e in events] == seqs
    await ws.close()


@pytest.mark.parametrize("batch_ms", [0, 40])
async def test_an_answer_keeps_its_place_between_live_events(
    make_bench: Make, batch_ms: int
) -> None:
    bench = await make_bench()
    ws = await bench.connect("me", batch_ms=batch_ms)
    other = await bench.connect("other", batch_ms=batch_ms)
    first = await bench.publish()
    # No await between the event and the answer: the answer must still come after it.
    bench.listeners["me"].reply({"event": "pong"})
    second = await bench.publish(lifecycle=True)
    third = await bench.publish()
    _, events = await read_until(ws, third)
    assert [e.get("seq", "pong") for e in events] == [first, "pong", second, third]
    # The same again once it is back on the fast path, and its neighbour never saw a pong.
    await ws.send_str("ping")
    assert (await recv(ws))["event"] in ("pong", "batch")
    fourth = await bench.publish()
    _, later = await read_until(ws, fourth)
    assert [e["seq"] for e in later if "seq" in e] == [fourth]
    _, neighbour = await read_until(other, fourth)
    assert [e["seq"] for e in neighbour] == [first, second, third, fourth]
    await ws.close()
    await other.close()


async def test_batches_come_at_most_once_per_batch_ms(make_bench: Make) -> None:
    bench = await make_bench()
    ws = await bench.connect("paced", batch_ms=150)
    loop = asyncio.get_running_loop()
    arrivals: list[float] = []
    events: list[JSON] = []

    async def read() -> None:
        while True:
            events.extend(flatten(await recv(ws)))
            arrivals.append(loop.time())

    reading = asyncio.create_task(read())
    published = []
    for _ in range(60):
        published.append(await bench.publish())
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.3)
    reading.cancel()
    assert [e["seq"] for e in events] == published
    # Events every 20 ms, for 1.2 s or more: batches on a 150 ms grid, never more often.
    # (The first may go at once, ahead of the grid; allow the reader 50 ms of jitter.)
    assert 2 <= len(arrivals) <= (arrivals[-1] - arrivals[0] + 0.05) / 0.15 + 2, arrivals
    await ws.close()


def test_the_grid_allows_at_most_one_batch_per_batch_ms() -> None:
    step = 0.25
    assert next_slot(0.0, step, 10.03) == (10.25, 10.03)  # idle: at once, counted at 10.25
    assert next_slot(10.25, step, 10.3) == (10.5, 10.5)  # too soon: wait for the grid
    assert next_slot(10.25, step, 10.6) == (10.5, 10.6)  # its instant just passed: go
    assert next_slot(10.25, step, 11.1) == (11.25, 11.1)  # idle again
    now, last = 5.0, 0.0
    slots: list[float] = []
    sent: list[float] = []
    for pause in [0.01, 0.3, 0.02, 0.7, 0.0, 0.26, 0.24, 1.0, 0.1, 0.251, 0.249] * 5:
        now += pause
        last, at = next_slot(last, step, now)
        now = max(now, at)
        if slots:
            # Never before the instant after the previous batch's: one batch per instant.
            assert now >= slots[-1] + step - 1e-9
            assert last >= slots[-1] + step - 1e-9
        slots.append(last)
        sent.append(now)
    assert len(sent) <= (sent[-1] - sent[0]) / step + 1


async def stalled_client(bench: Bench, name: str) -> ClientConnection:
    """A client that stops reading: tiny buffers on both ends, a one-message queue."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((bench.client.host, bench.client.port))
    url = str(bench.client.make_url("/ws")).replace("http://", "ws://", 1)
    url += f"?name={name}&who=admin&batch_ms=0&sndbuf=4096"
    slow = await websockets.asyncio.client.connect(url, sock=sock, max_queue=1)
    while "subscribed" not in str(await slow.recv()):
        pass
    return slow


async def read_stalled(slow: ClientConnection) -> tuple[list[JSON], int | None]:
    """Everything the stalled client was sent, and the close code if it was closed."""
    events: list[JSON] = []
    try:
        while True:
            events += flatten(json.loads(await asyncio.wait_for(slow.recv(), 20)))
    except TimeoutError:
        return events, None
    except websockets.ConnectionClosed as closed:
        return events, closed.rcvd.code if closed.rcvd is not None else None


async def test_a_socket_that_stops_reading_holds_up_nobody_and_loses_no_lifecycle_event(
    make_bench: Make,
) -> None:
    bench = await make_bench(queue_limit=1000)
    slow = await stalled_client(bench, "slow")
    readers = [await bench.connect(f"r{i}", batch_ms=20 * (i % 2)) for i in range(4)]
    published = [await bench.publish(lifecycle=i % 5 == 0, pad=2000) for i in range(300)]
    lifecycle = published[::5]
    # Every reader gets everything while the slow one still reads nothing.
    seen = await asyncio.wait_for(
        asyncio.gather(*(read_until(ws, published[-1]) for ws in readers)), 30
    )
    for i, (_, events) in enumerate(seen):
        seqs = [e["seq"] for e in events]
        if i % 2 == 0:
            assert seqs == published  # plain mode: every event
        else:
            # Batch mode: a batch over many events carries the newest progress per task.
            assert seqs == sorted(set(seqs)) and [s for s in seqs if s in lifecycle] == lifecycle
    assert bench.hub.queued_frames <= 3 * bench.hub.queue_limit

    # Then it reads: every lifecycle event, in order, and the newest progress; the hub kept
    # only the newest progress while it waited, so it may have skipped some of those.
    got: list[int] = []
    while not got or got[-1] < published[-1]:
        got += [e["seq"] for e in flatten(json.loads(await asyncio.wait_for(slow.recv(), 20)))]
    assert got == sorted(set(got))
    assert [seq for seq in got if seq in lifecycle] == lifecycle
    assert got[-1] == published[-1]
    await slow.close()
    for ws in readers:
        await ws.close()


async def test_a_socket_whose_lifecycle_events_no_longer_fit_is_closed_with_1013(
    make_bench: Make,
) -> None:
    bench = await make_bench(queue_limit=20)
    slow = await stalled_client(bench, "slow")
    reader = await bench.connect("reader")
    published = []
    for _ in range(200):
        published.append(await bench.publish(lifecycle=True, pad=4000))
        await asyncio.sleep(0.001)  # a reader that keeps up gets a moment to read
    _, events = await read_until(reader, published[-1])
    assert [e["seq"] for e in events] == published
    assert len(bench.hub) == 1  # the slow one was let go, the reader was not
    # Its memory is bounded: the shared log and an outbox, each within their limits.
    assert bench.hub.queued_frames <= 3 * 20
    events, code = await read_stalled(slow)
    assert code == 1013
    # What it did get is a gapless start of the stream, so it can resume with after_seq.
    got = [e["seq"] for e in events if "seq" in e]
    assert got == published[: len(got)]
    await reader.close()


async def test_sockets_of_a_revoked_key_close_at_once_even_one_opened_with_it_since(
    aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    """The key ring tells the hub of a revocation; a socket whose upgrade request was
    authenticated before it, but that opened after the hub was told, is closed as it opens."""
    store = SqliteStore(tmp_path / "keys.db")
    await store.open()
    bus = EventBus(store, SnapshotCache())
    await bus.start()
    hub = Hub(bus, 100)
    keyring = KeyRing(store)
    await keyring.start()
    hub.watch_keys(keyring)
    raw = {name: f"psk_{name}-key" for name in ("doomed", "keeper")}
    for name, key in raw.items():
        await store.create_key(name, hash_key(key), False)
    who = {name: await keyring.authenticate(key) for name, key in raw.items()}

    async def route(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        writer = await ws.prepare(request)
        transport = request.transport
        assert transport is not None
        listener = hub.open(ws, transport, writer.drain, transport.abort, who[request.query["who"]])
        async for _ in ws:
            pass
        await listener.finish()
        return ws

    app = web.Application()
    app.router.add_get("/ws", route)
    client = await aiohttp_client(app)
    try:
        doomed = await client.ws_connect("/ws", params={"who": "doomed"})
        keeper = await client.ws_connect("/ws", params={"who": "keeper"})
        assert len(hub) == 2
        await store.revoke_key("doomed")
        await keyring.refresh()  # what the ring's watcher does within 20 ms
        closed = await doomed.receive(timeout=1)
        assert closed.type is aiohttp.WSMsgType.CLOSE and closed.data == 1008, closed
        # Authenticated while the key was live, opened after the ring told the hub.
        late = await client.ws_connect("/ws", params={"who": "doomed"})
        closed = await late.receive(timeout=1)
        assert closed.type is aiohttp.WSMsgType.CLOSE and closed.data == 1008, closed
        await keeper.send_str("still here")
        assert len(hub) == 1 and not keeper.closed
        await keeper.close()
    finally:
        await hub.stop()
        await keyring.stop()
        await store.close()
