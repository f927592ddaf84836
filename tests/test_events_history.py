"""Event history: the guide's event shapes, persisted with a strictly increasing seq."""

from __future__ import annotations

import re
from typing import Any

from tests.apiclient import Api, read_only_db
from tests.origins import Origin, payload_sha256

ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
COMMON = {"event", "task_id", "timestamp", "seq", "state"}


def assert_event_shape(event: dict[str, Any]) -> None:
    """The guide's four shapes exactly, plus the contract's extra `seq` and `state`."""
    assert ISO_Z.match(event["timestamp"])
    assert type(event["seq"]) is int and event["seq"] >= 1
    name = event["event"]
    if name == "download.started":
        assert set(event) - {"restarted_from_zero", "reason"} == COMMON
    elif name == "download.progress":
        assert set(event) == COMMON | {"progress"}
        assert set(event["progress"]) == {
            "downloaded_bytes",
            "total_bytes",
            "percentage",
            "speed_mbps",
            "eta_seconds",
        }
    elif name == "download.completed":
        assert set(event) == COMMON | {"result"}
        assert {"filename", "size_mb", "duration_seconds"} <= set(event["result"])
    elif name == "download.retrying":
        assert set(event) >= COMMON | {"error", "attempt", "retry_in_seconds"}
        assert event["state"] == "downloading"
    elif name == "download.error":
        assert event["state"] == "failed"
        assert set(event) >= COMMON | {"error"}
        assert isinstance(event["error"]["type"], str)
        assert isinstance(event["error"]["message"], str)


async def test_a_download_leaves_a_complete_ordered_history(api: Api, origin: Origin) -> None:
    size = 1_000_000
    url = origin.url(size=size, rate=2_000_000)
    task = await api.submit(url, sha256=payload_sha256(size))
    await api.wait_for(task["task_id"], "completed")
    events = await api.events(task["task_id"])
    for event in events:
        assert_event_shape(event)
        assert event["task_id"] == task["task_id"]
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(set(seqs)), "seq must strictly increase"
    names = [e["event"] for e in events]
    assert names[0] == "download.queued"
    assert names[-1] == "download.completed"
    states = {e["event"]: e["state"] for e in events}
    assert states["download.queued"] == "pending"
    assert states["download.started"] == "downloading"
    assert states["download.processing"] == "processing"
    assert states["download.completed"] == "completed"
    completed = events[-1]
    assert completed["result"] == {
        "filename": "file",
        "size_mb": 0.95,
        "duration_seconds": None,
    }


async def test_after_seq_filters_and_global_history_is_per_key(api: Api, origin: Origin) -> None:
    other = await api.new_key("other")
    mine = [await api.submit(origin.url(size=1000, seed=i)) for i in range(3)]
    theirs = await api.submit(origin.url(size=1000), key=other)
    for task in mine:
        await api.wait_for(task["task_id"], "completed")
    await api.wait_for(theirs["task_id"], "completed", key=other)

    everything = await api.events()
    assert {e["task_id"] for e in everything} == {t["task_id"] for t in mine}
    seqs = [e["seq"] for e in everything]
    assert seqs == sorted(set(seqs))
    middle = seqs[len(seqs) // 2]
    later = await api.events(after_seq=middle)
    assert [e["seq"] for e in later] == [s for s in seqs if s > middle]
    assert await api.events(after_seq=seqs[-1]) == []

    one = mine[1]["task_id"]
    per_task = await api.events(one)
    assert per_task == [e for e in everything if e["task_id"] == one]
    first_seq = per_task[0]["seq"]
    assert await api.events(one, after_seq=first_seq) == per_task[1:]

    limited = await api.json("GET", "/api/events?after_seq=0&limit=2")
    assert [e["seq"] for e in limited["events"]] == seqs[:2]


async def test_lifecycle_events_are_in_sqlite_with_their_seq(api: Api, origin: Origin) -> None:
    task = await api.submit(origin.url(status=404))
    await api.wait_for(task["task_id"], "failed")
    served = await api.events(task["task_id"])
    with read_only_db(api.store_path) as db:
        rows = db.execute(
            "SELECT seq, event, state FROM events WHERE task_id = ? ORDER BY seq",
            (task["task_id"],),
        ).fetchall()
    lifecycle = [(e["seq"], e["event"], e["state"]) for e in served]
    assert rows == lifecycle
    assert [r[1] for r in rows] == ["download.queued", "download.started", "download.error"]
