"""Segmented downloads against hostile origins: every case ends with the origin's exact
bytes, never a mix of versions, and no byte that arrived is fetched twice."""

from __future__ import annotations

import hashlib
import itertools
import re
from datetime import datetime
from typing import Any

from tests.apiclient import JSON
from tests.conftest import MakeApi
from tests.enginekit import FAST_RETRIES, downloaded, errors, restarts, sha256_file
from tests.origins import Origin, RequestLog, gzip_payload, payload_sha256

SIZE = 4_000_000
# Four segments of a million bytes each.
SPLIT: dict[str, Any] = {"segments": 4, "min_segment_size": 500_000, **FAST_RETRIES}


def span(request: RequestLog) -> tuple[int, int | None] | None:
    """(first, last) byte a request asked for; None without a Range header."""
    if request.range is None:
        return None
    found = re.fullmatch(r"bytes=(\d+)-(\d*)", request.range)
    assert found, request.range
    return int(found[1]), int(found[2]) if found[2] else None


def segment_starts(requests: list[RequestLog]) -> list[int]:
    """Where the four segments begin: 0, and where the first three extra connections
    (the first three ranged requests) were sent. The split comes once the first
    connection proved slow, so its exact offsets depend on timing."""
    spans = sorted(s for s in (span(r) for r in requests) if s is not None)[:3]
    starts = [0] + [first for first, _ in spans]
    # The three extra parts tile the rest of the file in equal parts, up to its end.
    (a, b), (c, d), (e, f) = spans
    assert b is not None and d is not None, spans
    assert c == b + 1 and e == d + 1 and f is None, spans
    assert abs((b - a) - (d - c)) <= 1 and abs((SIZE - e) - (d - c + 1)) <= 3, spans
    return starts


def transfer_seconds(events: list[JSON]) -> float:
    stamps: dict[str, datetime] = {}
    for e in events:
        stamps.setdefault(e["event"], datetime.fromisoformat(e["timestamp"]))
    return (stamps["download.processing"] - stamps["download.started"]).total_seconds()


async def test_per_connection_throttling_is_beaten_by_four_connections(
    make_api: MakeApi, origin: Origin
) -> None:
    api = await make_api(**SPLIT)
    # One connection at 1 MB/s would take four seconds.
    url = origin.url("/file/fast.bin", size=SIZE, seed=1, conn_rate=1_000_000)
    task = await api.submit(url)
    done = await api.wait_for(task["task_id"], "completed")

    assert sha256_file(downloaded(api, done)) == payload_sha256(SIZE, 1)
    assert origin.peak_in_flight["/file/fast.bin"] == 4
    requests = origin.requests_for("/file/fast.bin")
    assert span(requests[0]) is None  # the first asks for the whole file ...
    # ... and once it proved slow, three more split what it had left, checked by If-Range.
    starts = segment_starts(requests)
    assert starts[1] < SIZE // 4 + 300_000  # split within a few tenths of a second
    assert {r.headers.get("If-Range") for r in requests[1:]} == {f'"1-{SIZE}-0"'}
    assert transfer_seconds(await api.events(task["task_id"])) < 3.5
    # Nothing was fetched twice (the first response stops where the second quarter begins).
    assert origin.sent["/file/fast.bin"] < SIZE * 1.05
    assert not (api.settings.downloads_dir / "fast.bin.part.segments").exists()


async def test_a_drop_keeps_every_byte_that_arrived(make_api: MakeApi, origin: Origin) -> None:
    """The issue's case: a connection dropped after 2,000,000 bytes, with nothing to let
    the client catch up first. The retry asks for byte 2,000,000, not 0 (nor 1 MiB less)."""
    api = await make_api(segments=1, **FAST_RETRIES)
    size = 5_000_000
    url = origin.url("/file/drop.bin", size=size, seed=3, drop_after=2_000_000, drop_times=1)
    task = await api.submit(url)
    done = await api.wait_for(task["task_id"], "completed")

    assert sha256_file(downloaded(api, done)) == payload_sha256(size, 3)
    first, second = origin.requests_for("/file/drop.bin")
    assert first.range is None
    assert second.range == "bytes=2000000-"
    assert origin.sent["/file/drop.bin"] == size


async def test_drops_in_several_segments_lose_nothing(make_api: MakeApi, origin: Origin) -> None:
    api = await make_api(**SPLIT)
    # The first three responses (the first connection's and two extras') break after
    # 300 kB; the connections keep going with what arrived.
    url = origin.url(
        "/file/drops.bin",
        size=SIZE,
        seed=4,
        conn_rate=2_000_000,
        drop_after=300_000,
        drop_times=3,
    )
    task = await api.submit(url)
    done = await api.wait_for(task["task_id"], "completed")

    assert sha256_file(downloaded(api, done)) == payload_sha256(SIZE, 4)
    requests = origin.requests_for("/file/drops.bin")
    dropped_starts = [(span(r) or (0, None))[0] for r in requests[:3]]
    later_starts = {(span(r) or (0, None))[0] for r in requests[3:]}
    for start in dropped_starts:
        # Each broken segment was asked for again exactly where its bytes stopped.
        assert start + 300_000 in later_starts, (start, later_starts)
    assert origin.sent["/file/drops.bin"] < SIZE * 1.05


async def test_range_ignored_after_the_first_ranged_request(
    make_api: MakeApi, origin: Origin
) -> None:
    api = await make_api(**SPLIT)
    url = origin.url("/file/once.bin", size=SIZE, seed=5, conn_rate=2_000_000, range_once=1)
    task = await api.submit(url)
    done = await api.wait_for(task["task_id"], "completed")

    assert sha256_file(downloaded(api, done)) == payload_sha256(SIZE, 5)
    ranged = [r for r in origin.requests_for("/file/once.bin") if r.range is not None]
    assert len(ranged) >= 2  # the origin answered all but the first with the whole file
    # The connections refused a range just ended: nothing failed.
    assert errors(await api.events(task["task_id"])) == []


async def test_429_on_the_third_connection_lowers_the_count(
    make_api: MakeApi, origin: Origin
) -> None:
    api = await make_api(**SPLIT)
    url = origin.url(
        "/file/busy.bin", size=SIZE, seed=6, conn_rate=1_000_000, busy_over=2, retry_after=1
    )
    task = await api.submit(url)
    done = await api.wait_for(task["task_id"], "completed")

    assert sha256_file(downloaded(api, done)) == payload_sha256(SIZE, 6)
    assert origin.peak_in_flight["/file/busy.bin"] == 2
    assert origin.turned_away["/file/busy.bin"] >= 1
    # Turned away connections are not failures of the task.
    assert errors(await api.events(task["task_id"])) == []
    assert origin.sent["/file/busy.bin"] < SIZE * 1.05


async def test_a_new_version_half_way_restarts_from_zero_and_never_mixes(
    make_api: MakeApi, origin: Origin
) -> None:
    api = await make_api(**SPLIT)
    # Requests 1 and 2 get version 0 (seed 7), every later one version 1 (seed 8).
    url = origin.url("/file/v.bin", size=SIZE, seed=7, conn_rate=2_000_000, change_after=2)
    task = await api.submit(url)
    done = await api.wait_for(task["task_id"], "completed")

    assert sha256_file(downloaded(api, done)) == payload_sha256(SIZE, 8)
    (restart,) = restarts(await api.events(task["task_id"]))
    assert restart["reason"] == "the file changed on the origin"


async def test_gzip_is_fetched_whole_on_one_connection(make_api: MakeApi, origin: Origin) -> None:
    api = await make_api(**SPLIT)
    task = await api.submit(origin.url("/file/z.bin", size=SIZE, seed=9, gzip=1))
    done = await api.wait_for(task["task_id"], "completed")

    stored = downloaded(api, done).read_bytes()
    # Kept as the origin encoded it, byte for byte (Content-Encoding is not undone).
    assert hashlib.sha256(stored).hexdigest() == hashlib.sha256(gzip_payload(SIZE, 9)).hexdigest()
    assert [r.range for r in origin.requests_for("/file/z.bin")] == [None]


async def test_no_content_length_is_fetched_on_one_connection(
    make_api: MakeApi, origin: Origin
) -> None:
    api = await make_api(**SPLIT)
    task = await api.submit(origin.url("/file/nl.bin", size=SIZE, seed=10, no_length=1))
    done = await api.wait_for(task["task_id"], "completed")

    assert sha256_file(downloaded(api, done)) == payload_sha256(SIZE, 10)
    assert [r.range for r in origin.requests_for("/file/nl.bin")] == [None]


async def test_a_task_can_ask_for_one_connection(make_api: MakeApi, origin: Origin) -> None:
    api = await make_api(**SPLIT)
    url = origin.url("/file/one.bin", size=SIZE, seed=11, conn_rate=4_000_000)
    task = await api.submit(url, segments=1)
    done = await api.wait_for(task["task_id"], "completed")

    assert sha256_file(downloaded(api, done)) == payload_sha256(SIZE, 11)
    assert [r.range for r in origin.requests_for("/file/one.bin")] == [None]


async def test_pause_and_resume_continue_every_segment(make_api: MakeApi, origin: Origin) -> None:
    api = await make_api(**SPLIT)
    url = origin.url("/file/p.bin", size=SIZE, seed=12, conn_rate=500_000)
    task = await api.submit(url)
    await api.wait_bytes(task["task_id"], SIZE // 4)
    await api.json("POST", f"/api/downloads/{task['task_id']}/pause")
    journal = api.settings.downloads_dir / "p.bin.part.segments"
    assert journal.exists()
    before = len(origin.requests_for("/file/p.bin"))

    await api.json("POST", f"/api/downloads/{task['task_id']}/resume")
    done = await api.wait_for(task["task_id"], "completed")

    assert sha256_file(downloaded(api, done)) == payload_sha256(SIZE, 12)
    requests = origin.requests_for("/file/p.bin")
    bounds = [*segment_starts(requests[:before]), SIZE]
    resumed = [span(r) for r in requests[before:]]
    # Each of the four segments goes on from inside itself, not from its start.
    for start, stop in itertools.pairwise(bounds):
        assert any(s is not None and start < s[0] < stop for s in resumed), (bounds, resumed)
    assert origin.sent["/file/p.bin"] < SIZE * 1.1
    assert not journal.exists()


async def test_deleting_a_paused_split_download_leaves_no_file(
    make_api: MakeApi, origin: Origin
) -> None:
    api = await make_api(**SPLIT)
    task = await api.submit(origin.url("/file/d.bin", size=SIZE, seed=13, conn_rate=500_000))
    await api.wait_bytes(task["task_id"], SIZE // 4)
    await api.json("POST", f"/api/downloads/{task['task_id']}/pause")
    downloads = api.settings.downloads_dir
    assert {p.name for p in downloads.iterdir()} == {"d.bin.part", "d.bin.part.segments"}

    await api.json("DELETE", f"/api/downloads/{task['task_id']}", status=204)
    assert list(downloads.iterdir()) == []


async def test_extra_connections_go_straight_to_where_the_redirect_led(
    make_api: MakeApi, origin: Origin
) -> None:
    api = await make_api(**SPLIT)
    url = origin.url("/file/r.bin", size=SIZE, seed=14, conn_rate=1_000_000, redirect=1)
    task = await api.submit(url)
    done = await api.wait_for(task["task_id"], "completed")

    assert sha256_file(downloaded(api, done)) == payload_sha256(SIZE, 14)
    requests = origin.requests_for("/file/r.bin")
    # One redirect, once: the ranged requests ask the final URL.
    assert [r.query.get("redirect") for r in requests].count("1") == 1
    assert len([r for r in requests if r.range]) >= 3
