"""progress_server.client against a real server: REST calls, errors, and live events."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from progress_server.client import (
    FINAL_STATES,
    ApiError,
    Event,
    ProgressClient,
    ServerUnreachable,
    SubscriptionError,
    TaskRecord,
)
from tests.apiclient import Api
from tests.conftest import MakeApi
from tests.origins import Origin, payload
from tests.serverproc import ServerProcess, create_key, free_port

SLOW = {"size": 3_000_000, "rate": 300_000}  # ten seconds unless stopped


def base_url(api: Api) -> str:
    return str(api.client.make_url("")).rstrip("/")


@pytest.fixture
async def api(make_api: MakeApi) -> Api:
    return await make_api(retry_base_delay=0.05, max_retries=1)


@pytest.fixture
async def client(api: Api) -> AsyncIterator[ProgressClient]:
    async with ProgressClient(base_url(api), api.key) as opened:
        yield opened


async def wait_state(
    client: ProgressClient, task_id: str, *states: str, within: float = 30
) -> TaskRecord:
    deadline = time.monotonic() + within
    while True:
        record = await client.get(task_id)
        if record["state"] in states:
            return record
        assert time.monotonic() < deadline, f"still {record['state']}, wanted {states}"
        await asyncio.sleep(0.05)


# -- REST --------------------------------------------------------------------------------


async def test_create_then_get_follows_a_download_to_completed(
    client: ProgressClient, api: Api, origin: Origin
) -> None:
    url = origin.url("/file/notes.bin", size=200_000, seed=3)
    created = await client.create(url)
    assert created["state"] == "pending"
    assert created["url"] == url

    done = await wait_state(client, created["task_id"], *FINAL_STATES)
    assert done["state"] == "completed"
    assert done["filename"] == "notes.bin"
    assert done["result"] is not None
    assert done["result"]["filename"] == "notes.bin"
    assert done["progress"]["percentage"] == 100.0
    saved = api.settings.downloads_dir / "notes.bin"
    assert saved.read_bytes() == payload(200_000, 3)


async def test_create_sends_filename_sha256_and_idempotency_key(
    client: ProgressClient, origin: Origin
) -> None:
    url = origin.url(size=10_000)
    first = await client.create(url, filename="mine.bin", sha256="0" * 64, idempotency_key="k1")
    again = await client.create(url, filename="mine.bin", sha256="0" * 64, idempotency_key="k1")
    assert again["task_id"] == first["task_id"]
    # The same key with another request is refused (#11).
    with pytest.raises(ApiError) as refused:
        await client.create(url, idempotency_key="k1")
    assert refused.value.status == 409 and refused.value.type == "idempotency_conflict"
    assert first["filename"] == "mine.bin"
    failed = await wait_state(client, first["task_id"], *FINAL_STATES)
    # The wrong checksum reached the server: the task fails its verification.
    assert failed["state"] == "failed"
    assert failed["error"] is not None
    assert failed["error"]["type"] == "checksum_mismatch"


async def test_list_follows_next_cursor_across_pages(
    client: ProgressClient, origin: Origin
) -> None:
    ids = [(await client.create(origin.url(size=1000, seed=i)))["task_id"] for i in range(7)]
    listed = await client.list(page_size=3)
    assert [task["task_id"] for task in listed] == ids
    for task_id in ids:
        await wait_state(client, task_id, "completed")
    assert [t["task_id"] for t in await client.list("completed", page_size=2)] == ids
    assert await client.list(["failed", "cancelled"]) == []


async def test_pause_resume_cancel_retry_delete(
    client: ProgressClient, api: Api, origin: Origin
) -> None:
    task = await client.create(origin.url("/file/slow.bin", **SLOW))
    task_id = task["task_id"]
    await wait_state(client, task_id, "downloading")

    assert (await client.pause(task_id))["state"] == "paused"
    assert (await client.resume(task_id))["state"] in ("pending", "downloading")
    assert (await client.cancel(task_id))["state"] == "cancelled"
    assert (await client.retry(task_id))["state"] in ("pending", "downloading")
    await client.cancel(task_id)

    await client.delete(task_id)
    with pytest.raises(ApiError) as missing:
        await client.get(task_id)
    assert missing.value.status == 404


async def test_delete_file_removes_the_download(
    client: ProgressClient, api: Api, origin: Origin
) -> None:
    task = await client.create(origin.url("/file/gone.bin", size=5000))
    await wait_state(client, task["task_id"], "completed")
    path = api.settings.downloads_dir / "gone.bin"
    assert path.exists()
    await client.delete(task["task_id"], delete_file=True)
    assert not path.exists()


async def test_wait_returns_final_records_and_save_file_fetches_the_file(
    client: ProgressClient, origin: Origin, tmp_path: Path
) -> None:
    good = await client.create(origin.url("/file/keep.bin", size=300_000, seed=5, rate=600_000))
    bad = await client.create(origin.url("/file/nope.bin", status=404))
    finished = await asyncio.wait_for(client.wait([good["task_id"], bad["task_id"]]), 60)
    assert [r["state"] for r in finished] == ["completed", "failed"]

    saved = await client.save_file(good["task_id"], tmp_path)
    assert saved == tmp_path / "keep.bin"
    assert saved.read_bytes() == payload(300_000, 5)
    renamed = await client.save_file(good["task_id"], tmp_path / "copy.bin")
    assert renamed.read_bytes() == payload(300_000, 5)
    with pytest.raises(ApiError) as not_ready:
        await client.save_file(bad["task_id"], tmp_path / "never.bin")
    assert not_ready.value.status == 409
    assert not (tmp_path / "never.bin").exists()


async def test_events_returns_the_persisted_history_in_order(
    client: ProgressClient, origin: Origin
) -> None:
    task = await client.create(origin.url(size=5000))
    await wait_state(client, task["task_id"], "completed")
    history = await client.events(task["task_id"])
    names = [event["event"] for event in history]
    assert names[0] == "download.queued"
    assert "download.started" in names
    assert names[-1] == "download.completed"
    seqs = [event["seq"] for event in history]
    assert seqs == sorted(seqs)
    later = await client.events(after_seq=seqs[0])
    assert [e["seq"] for e in later if e["task_id"] == task["task_id"]] == seqs[1:]


async def test_server_errors_become_api_errors(
    client: ProgressClient, api: Api, origin: Origin
) -> None:
    with pytest.raises(ApiError) as bad_name:
        await client.create(origin.url(size=10), filename="../escape")
    assert bad_name.value.status == 422
    assert bad_name.value.type == "validation_error"

    with pytest.raises(ApiError) as unknown:
        await client.get("00000000-0000-4000-8000-000000000000")
    assert (unknown.value.status, unknown.value.type) == (404, "not_found")

    async with ProgressClient(base_url(api), "psk_not-a-key") as stranger:
        with pytest.raises(ApiError) as refused:
            await stranger.list()
    assert refused.value.status == 401
    assert await client.list() == []  # nothing was created by the refused calls


async def test_another_keys_tasks_are_invisible(
    client: ProgressClient, api: Api, origin: Origin
) -> None:
    mine = await client.create(origin.url(size=10))
    async with ProgressClient(base_url(api), await api.new_key("other")) as other:
        assert await other.list() == []
        with pytest.raises(ApiError) as hidden:
            await other.cancel(mine["task_id"])
    assert hidden.value.status == 404


async def test_unreachable_server_raises_server_unreachable() -> None:
    async with ProgressClient(f"http://127.0.0.1:{free_port()}", "psk_x", timeout=5) as nobody:
        with pytest.raises(ServerUnreachable):
            await nobody.list()


# -- live events ----------------------------------------------------------------------


async def collect_until_final(
    events: AsyncIterator[Event], task_id: str, within: float = 60
) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []

    async def read() -> None:
        async for event in events:
            seen.append(dict(event))
            if event.get("task_id") == task_id and event.get("event") in (
                "download.completed",
                "download.error",
                "download.cancelled",
            ):
                return

    await asyncio.wait_for(read(), within)
    return seen


async def test_subscribe_delivers_a_download_from_snapshot_to_completed(
    client: ProgressClient, origin: Origin
) -> None:
    task = await client.create(origin.url(size=600_000, rate=1_500_000))
    task_id = task["task_id"]
    async with client.subscribe([task_id]) as events:
        seen = await collect_until_final(events, task_id)
    assert seen[0]["event"] == "subscribed"
    assert seen[0]["task_id"] == task_id
    names = [e["event"] for e in seen[1:]]
    assert names[-1] == "download.completed"
    assert "download.progress" in names
    progress = [e for e in seen if e["event"] == "download.progress"]
    assert progress[-1]["progress"]["percentage"] == 100.0
    seqs = [e["seq"] for e in seen[1:]]
    assert seqs == sorted(set(seqs)), "events arrive once each, in seq order"


async def test_subscribe_star_sees_tasks_created_later(
    client: ProgressClient, origin: Origin
) -> None:
    async with client.subscribe("*") as events:
        first = await asyncio.wait_for(events.__anext__(), 10)
        assert first["event"] == "subscribed"
        task = await client.create(origin.url(size=2000))
        seen = await collect_until_final(events, task["task_id"])
    names = [e["event"] for e in seen if e.get("task_id") == task["task_id"]]
    assert names[0] == "download.queued"
    assert names[-1] == "download.completed"


async def test_subscribe_in_batch_mode_yields_the_same_single_events(
    client: ProgressClient, origin: Origin
) -> None:
    task = await client.create(origin.url(size=400_000, rate=1_000_000))
    async with client.subscribe([task["task_id"]], batch_ms=100) as events:
        seen = await collect_until_final(events, task["task_id"])
    assert seen[0]["event"] == "subscribed"
    assert all(e["event"] != "batch" for e in seen)
    assert seen[-1]["event"] == "download.completed"
    seqs = [e["seq"] for e in seen[1:]]
    assert seqs == sorted(set(seqs))


async def test_subscribing_to_an_unknown_task_raises(client: ProgressClient) -> None:
    async with client.subscribe(["00000000-0000-4000-8000-000000000000"]) as events:
        with pytest.raises(SubscriptionError) as refused:
            await asyncio.wait_for(events.__anext__(), 10)
    assert refused.value.type == "not_found"


async def test_subscribe_after_seq_replays_history(client: ProgressClient, origin: Origin) -> None:
    task = await client.create(origin.url(size=3000))
    await wait_state(client, task["task_id"], "completed")
    history = await client.events(task["task_id"])
    async with client.subscribe([task["task_id"]], after_seq=0) as events:
        seen = await collect_until_final(events, task["task_id"])
    replayed = [e for e in seen if e["event"] != "subscribed"]
    assert [e["seq"] for e in replayed] == [e["seq"] for e in history]


async def test_subscribe_survives_a_server_restart_without_losing_lifecycle_events(
    tmp_path: Path, origin: Origin
) -> None:
    data = tmp_path / "srv"
    key = create_key(data, "restart")
    with ServerProcess(data, "--progress-interval", "0.1") as proc:
        async with ProgressClient(proc.base_url, key) as client:
            task = await client.create(origin.url("/file/long.bin", size=1_500_000, rate=250_000))
            task_id = task["task_id"]
            async with client.subscribe([task_id]) as events:
                seen: list[dict[str, Any]] = []
                async for event in events:
                    seen.append(dict(event))
                    if event["event"] == "download.progress":
                        break
                # Restart mid-download: the socket closes with 1001, the client reconnects
                # by itself and resumes with after_seq.
                await asyncio.to_thread(proc.restart)
                seen += await collect_until_final(events, task_id, within=90)
                reconnects = events.reconnects
            history = await client.events(task_id)
    assert reconnects >= 1
    assert seen[0]["event"] == "subscribed"
    persisted = [e["seq"] for e in history if e["event"] != "download.progress"]
    expected = [seq for seq in persisted if seq > seen[0]["seq"]]
    delivered = [e["seq"] for e in seen if e["event"] != "subscribed"]
    assert [seq for seq in delivered if seq in set(persisted)] == expected
    assert len(delivered) == len(set(delivered)), "no event delivered twice"
    assert seen[-1]["event"] == "download.completed"
