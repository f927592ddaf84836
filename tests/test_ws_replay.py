"""Reconnect without loss: `after_seq` replays from SQLite and joins the live stream with no
gap and no duplicate, while events keep coming; and across a server restart."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import aiohttp

from tests.apiclient import Api
from tests.conftest import MakeApi
from tests.origins import Origin
from tests.serverproc import ServerProcess, create_key
from tests.wsclient import JSON, LIFECYCLE, WS_PATH, flatten, recv, recv_until

# A caught-up connection hears nothing for this long once every task has finished.
IDLE_SECONDS = 2.0
POLL_SECONDS = 0.25


class Chain:
    """One client that keeps dropping its socket and coming back with `after_seq`."""

    def __init__(self, api: Api, target: str, seed: int) -> None:
        self.api = api
        self.target = target
        self.rng = random.Random(seed)
        self.last_seq = 0
        self.lifecycle: list[int] = []
        self.connections = 0

    async def run(self, everything_done: asyncio.Event) -> None:
        while True:
            caught_up = await self._one_connection(everything_done)
            if caught_up:
                return

    async def _one_connection(self, everything_done: asyncio.Event) -> bool:
        self.connections += 1
        ws = await self.api.client.ws_connect(WS_PATH, headers=self.api.auth())
        await ws.send_json(
            {"action": "subscribe", "task_id": self.target, "after_seq": self.last_seq}
        )
        budget = self.rng.randint(1, 8)
        seqs_here: list[int] = []
        idle = 0.0
        try:
            while budget > 0:
                try:
                    frame = await recv(ws, POLL_SECONDS)
                except TimeoutError:
                    idle = idle + POLL_SECONDS if everything_done.is_set() else 0.0
                    if idle >= IDLE_SECONDS:
                        return True
                    continue
                idle = 0.0
                for message in flatten(frame):
                    self._take(message, seqs_here)
                    budget -= 1
            return False
        finally:
            # Seq never goes backwards on one socket, the `subscribed` snapshot included.
            assert seqs_here == sorted(seqs_here), seqs_here
            await ws.close()

    def _take(self, message: JSON, seqs_here: list[int]) -> None:
        event = message["event"]
        if event == "subscribed":
            seqs_here.append(message["seq"])
            self.last_seq = max(self.last_seq, message["seq"])
        elif event.startswith("download."):
            seqs_here.append(message["seq"])
            assert message["seq"] > self.last_seq, (message, self.last_seq)
            self.last_seq = message["seq"]
            # Processing progress shares the name download.processing but is not stored.
            if event in LIFECYCLE and "processing" not in message:
                self.lifecycle.append(message["seq"])


async def all_events(api: Api) -> list[JSON]:
    events: list[JSON] = []
    while page := await api.events(after_seq=events[-1]["seq"] if events else 0):
        events += page
    return events


async def test_reconnecting_with_after_seq_misses_nothing_while_events_pour_in(
    make_api: MakeApi, origin: Origin
) -> None:
    api = await make_api(
        max_concurrent=10,
        max_per_host=10,
        max_retries=12,
        retry_base_delay=0.01,
        retry_max_delay=0.02,
        progress_interval=0.05,
    )
    # Retrying tasks make a burst of persisted `download.retrying` events each; rate-limited
    # ones make steady progress. All run while the clients below keep reconnecting.
    retrying = [
        await api.submit(origin.url(size=300_000, status=503, fail_times=10, seed=i))
        for i in range(5)
    ]
    steady = [
        await api.submit(origin.url(size=1_500_000, rate=1_500_000, seed=100 + i)) for i in range(5)
    ]
    tasks = retrying + steady
    chains = [Chain(api, "*", seed) for seed in range(3)]
    chains += [Chain(api, t["task_id"], 10 + n) for n, t in enumerate(retrying[:2])]
    everything_done = asyncio.Event()
    running = [asyncio.create_task(chain.run(everything_done)) for chain in chains]

    for task in tasks:
        await api.wait_for(task["task_id"], "completed", within=90)
    everything_done.set()
    await asyncio.wait_for(asyncio.gather(*running), 120)

    stored = await all_events(api)
    assert {e["task_id"] for e in stored} == {t["task_id"] for t in tasks}
    errors = [e for e in stored if e["event"] == "download.retrying"]
    assert len(errors) == 50
    for chain in chains:
        wanted = [e["seq"] for e in stored if chain.target in ("*", e["task_id"])]
        # Every persisted event, each exactly once, in order, across all the reconnects.
        assert chain.lifecycle == wanted, (chain.target, chain.connections)
        assert chain.connections >= 3


async def test_subscribed_follows_the_replay_and_live_events_follow_it(
    api: Api, origin: Origin
) -> None:
    done = await api.submit(origin.url(size=50_000))
    await api.wait_for(done["task_id"], "completed")
    stored = await all_events(api)
    ws = await api.client.ws_connect(WS_PATH, headers=api.auth())
    await ws.send_json({"action": "subscribe", "task_id": "*", "after_seq": stored[1]["seq"]})
    replayed = await recv_until(ws, lambda m: m["event"] == "subscribed")
    assert replayed[:-1] == stored[2:]
    assert replayed[-1]["seq"] == stored[-1]["seq"]
    later = await api.submit(origin.url(size=50_000, seed=3))
    live = await recv_until(ws, lambda m: m["event"] == "download.completed")
    assert {m["task_id"] for m in live} == {later["task_id"]}
    assert live[0]["seq"] > stored[-1]["seq"]
    await ws.close()


async def test_shutdown_closes_sockets_with_1001_and_after_seq_works_across_a_restart(
    tmp_path: Path, origin: Origin
) -> None:
    data = tmp_path / "data"
    key = create_key(data, "k")
    headers = {"Authorization": f"Bearer {key}"}
    server = ServerProcess(data, "--min-free-space", "0")
    server.start()
    try:
        async with aiohttp.ClientSession(headers=headers) as http:
            ws = await http.ws_connect(server.ws_url)
            await ws.send_json({"action": "subscribe", "task_id": "*"})
            assert (await recv(ws))["event"] == "subscribed"
            async with http.post(
                f"{server.base_url}/api/downloads", json={"url": origin.url(size=100_000)}
            ) as resp:
                assert resp.status == 201
            before = await recv_until(ws, lambda m: m["event"] == "download.completed")
            last_seq = before[-1]["seq"]

            # Keep reading while the server stops, as a live client would, so the close
            # handshake completes.
            closing = asyncio.create_task(ws.receive(timeout=30))
            assert await asyncio.to_thread(server.stop) == 0
            msg = await closing
            assert msg.type is aiohttp.WSMsgType.CLOSE, msg
            assert ws.close_code == 1001

            server.start()
            async with http.post(
                f"{server.base_url}/api/downloads", json={"url": origin.url(size=100_000, seed=2)}
            ) as resp:
                second = await resp.json()
            ws = await http.ws_connect(server.ws_url)
            await ws.send_json({"action": "subscribe", "task_id": "*", "after_seq": last_seq})
            after = await recv_until(
                ws,
                lambda m: m["event"] == "download.completed" and m["task_id"] == second["task_id"],
            )
            events = [m for m in after if m["event"].startswith("download.")]
            assert events[0]["event"] == "download.queued"
            assert {m["task_id"] for m in events} == {second["task_id"]}
            # seq kept increasing across the restart: nothing replayed twice, nothing reused.
            assert all(m["seq"] > last_seq for m in events)
            await ws.close()
    finally:
        if server.running:
            server.stop()
