"""The REST task routes, against a real origin, over real HTTP, with a real SQLite file."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from pathlib import Path

import pytest

from tests.apiclient import Api, assert_error
from tests.conftest import MakeApi
from tests.origins import Origin, payload, payload_sha256

SIZE = 300_000
SLOW = {"size": 4_000_000, "rate": 400_000}  # ten seconds unless stopped


def downloads(api: Api) -> Path:
    return api.settings.downloads_dir


# -- the happy path ---------------------------------------------------------------------


async def test_download_runs_through_every_state_to_completed(api: Api, origin: Origin) -> None:
    url = origin.url("/file/report.bin", size=SIZE, seed=7)
    resp = await api.call(
        "POST", "/api/downloads", json={"url": url, "sha256": payload_sha256(SIZE, 7).upper()}
    )
    assert resp.status == 201
    created = await resp.json()
    assert resp.headers["Location"] == f"/api/downloads/{created['task_id']}"
    assert str(uuid.UUID(created["task_id"])) == created["task_id"]
    assert created["state"] == "pending"
    assert created["url"] == url

    done = await api.wait_for(created["task_id"], "completed")
    assert set(done) >= {
        "task_id",
        "url",
        "filename",
        "state",
        "progress",
        "result",
        "error",
        "created_at",
        "updated_at",
    }
    assert done["filename"] == "report.bin"
    assert done["error"] is None
    assert done["result"] == {
        "filename": "report.bin",
        "size_mb": round(SIZE / 2**20, 2),
        "duration_seconds": None,
    }
    assert done["progress"]["downloaded_bytes"] == SIZE
    assert done["progress"]["percentage"] == 100.0
    assert (downloads(api) / "report.bin").read_bytes() == payload(SIZE, 7)
    assert not (downloads(api) / "report.bin.part").exists()

    names = [e["event"] for e in await api.events(created["task_id"])]
    lifecycle = [n for n in names if n != "download.progress"]
    assert lifecycle == [
        "download.queued",
        "download.started",
        "download.processing",
        "download.completed",
    ]


async def test_finished_file_is_served_with_range_support(api: Api, origin: Origin) -> None:
    task = await api.submit(origin.url(size=SIZE, seed=2), filename="data.bin")
    await api.wait_for(task["task_id"], "completed")
    path = f"/api/downloads/{task['task_id']}/file"

    whole = await api.call("GET", path)
    assert whole.status == 200
    assert await whole.read() == payload(SIZE, 2)
    assert "data.bin" in whole.headers["Content-Disposition"]

    part = await api.call("GET", path, headers={"Range": "bytes=1000-1999"})
    assert part.status == 206
    assert part.headers["Content-Range"] == f"bytes 1000-1999/{SIZE}"
    assert await part.read() == payload(SIZE, 2)[1000:2000]

    tail = await api.call("GET", path, headers={"Range": "bytes=-10"})
    assert tail.status == 206
    assert await tail.read() == payload(SIZE, 2)[-10:]


async def test_file_of_an_unfinished_task_is_a_conflict(api: Api, origin: Origin) -> None:
    task = await api.submit(origin.url(**SLOW))
    resp = await api.call("GET", f"/api/downloads/{task['task_id']}/file")
    assert resp.status == 409
    assert_error(await resp.json(), "conflict")


async def test_origin_name_comes_from_content_disposition(api: Api, origin: Origin) -> None:
    url = origin.url(size=1000, disposition='attachment; filename="../../etc/passwd"')
    task = await api.submit(url)
    done = await api.wait_for(task["task_id"], "completed")
    # Sanitised, never refused, and never outside the downloads folder.
    assert done["filename"] == "passwd"
    assert (downloads(api) / "passwd").read_bytes() == payload(1000)


# -- failures ----------------------------------------------------------------------------


async def test_origin_404_fails_as_http_error(api: Api, origin: Origin) -> None:
    task = await api.submit(origin.url(status=404))
    failed = await api.wait_for(task["task_id"], "failed")
    assert failed["error"]["type"] == "http_error"
    assert "404" in failed["error"]["message"]
    assert failed["result"] is None
    events = await api.events(task["task_id"])
    error = events[-1]
    assert error["event"] == "download.error"
    assert error["error"]["type"] == "http_error"
    assert error["state"] == "failed"


async def test_wrong_sha256_fails_as_checksum_mismatch(api: Api, origin: Origin) -> None:
    task = await api.submit(origin.url(size=SIZE), filename="x.bin", sha256="0" * 64)
    failed = await api.wait_for(task["task_id"], "failed")
    assert failed["error"]["type"] == "checksum_mismatch"
    # A file that failed its check never sits under the completed name.
    assert not (downloads(api) / "x.bin").exists()


async def test_unreachable_origin_fails_as_network_error(make_api: MakeApi) -> None:
    api = await make_api(max_retries=0)
    task = await api.submit("http://127.0.0.1:9/nothing-listens-here")
    failed = await api.wait_for(task["task_id"], "failed")
    assert failed["error"]["type"] == "network_error"


# -- cancel, retry, pause, resume ------------------------------------------------------


async def test_cancel_stops_the_transfer_within_a_second(api: Api, origin: Origin) -> None:
    task = await api.submit(origin.url(**SLOW))
    task_id = task["task_id"]
    await api.wait_bytes(task_id, 1)
    cancelled = await api.json("POST", f"/api/downloads/{task_id}/cancel")
    assert cancelled["state"] == "cancelled"
    stopped_at = (await api.task(task_id))["progress"]["downloaded_bytes"]
    part = downloads(api) / (cancelled["filename"] + ".part")
    size = part.stat().st_size
    # Nothing to poll for: the claim is that nothing happens, so give it time to.
    await asyncio.sleep(1.0)
    assert part.stat().st_size == size, "bytes kept arriving after cancel"
    assert (await api.task(task_id))["progress"]["downloaded_bytes"] == stopped_at
    events = await api.events(task_id)
    assert events[-1]["event"] == "download.cancelled"
    assert events[-1]["error"]["type"] == "cancelled"


async def test_cancel_of_a_completed_task_is_a_conflict(api: Api, origin: Origin) -> None:
    task = await api.submit(origin.url(size=1000))
    await api.wait_for(task["task_id"], "completed")
    resp = await api.call("POST", f"/api/downloads/{task['task_id']}/cancel")
    assert resp.status == 409
    assert_error(await resp.json(), "conflict")
    assert (await api.task(task["task_id"]))["state"] == "completed"


async def test_cancel_of_a_pending_task(make_api: MakeApi, origin: Origin) -> None:
    api = await make_api(max_concurrent=1)
    first = await api.submit(origin.url(**SLOW))
    second = await api.submit(origin.url(size=1000, seed=1))
    cancelled = await api.json("POST", f"/api/downloads/{second['task_id']}/cancel")
    assert cancelled["state"] == "cancelled"
    await api.json("POST", f"/api/downloads/{first['task_id']}/cancel")
    # A cancelled pending task never starts.
    assert origin.count("/file") <= 1


async def test_retry_of_a_failed_task_resumes_with_range(make_api: MakeApi, origin: Origin) -> None:
    api = await make_api(max_retries=0)
    # Throttled so bytes arrive before the drop: aiohttp discards what is still buffered
    # when it sees the connection break, so an instant drop could leave an empty .part.
    url = origin.url(size=SIZE, seed=3, rate=400_000, drop_after=200_000, drop_times=1)
    task = await api.submit(url)
    failed = await api.wait_for(task["task_id"], "failed")
    assert failed["error"]["type"] == "network_error"
    kept = (downloads(api) / (failed["filename"] + ".part")).stat().st_size
    assert 0 < kept <= 200_000

    retried = await api.json("POST", f"/api/downloads/{task['task_id']}/retry")
    assert retried["state"] == "pending"
    assert retried["error"] is None
    done = await api.wait_for(task["task_id"], "completed")

    resumed = origin.requests_for("/file")[-1]
    assert resumed.range == f"bytes={kept}-"
    assert resumed.headers.get("If-Range") == f'"3-{SIZE}-0"'
    data = (downloads(api) / done["filename"]).read_bytes()
    assert hashlib.sha256(data).hexdigest() == payload_sha256(SIZE, 3)


async def test_retry_of_a_cancelled_task_resumes_with_range(api: Api, origin: Origin) -> None:
    task = await api.submit(origin.url(size=1_000_000, rate=300_000, seed=4))
    task_id = task["task_id"]
    await api.wait_bytes(task_id, 100_000)
    cancelled = await api.json("POST", f"/api/downloads/{task_id}/cancel")
    kept = (downloads(api) / (cancelled["filename"] + ".part")).stat().st_size
    assert kept > 0

    await api.json("POST", f"/api/downloads/{task_id}/retry")
    done = await api.wait_for(task_id, "completed", within=60)
    resumed = origin.requests_for("/file")[-1]
    assert resumed.range == f"bytes={kept}-"
    assert resumed.headers.get("If-Range") is not None
    data = (downloads(api) / done["filename"]).read_bytes()
    assert hashlib.sha256(data).hexdigest() == payload_sha256(1_000_000, 4)


async def test_retry_of_a_running_or_completed_task_is_a_conflict(api: Api, origin: Origin) -> None:
    task = await api.submit(origin.url(size=1000))
    await api.wait_for(task["task_id"], "completed")
    resp = await api.call("POST", f"/api/downloads/{task['task_id']}/retry")
    assert resp.status == 409
    assert_error(await resp.json(), "conflict")


async def test_pause_keeps_the_part_file_and_resume_continues(api: Api, origin: Origin) -> None:
    task = await api.submit(origin.url(size=1_000_000, rate=300_000, seed=5))
    task_id = task["task_id"]
    await api.wait_bytes(task_id, 100_000)
    paused = await api.json("POST", f"/api/downloads/{task_id}/pause")
    assert paused["state"] == "paused"
    assert (await api.progress(task_id))["state"] == "paused"
    kept = (downloads(api) / (paused["filename"] + ".part")).stat().st_size
    assert kept > 0

    resumed = await api.json("POST", f"/api/downloads/{task_id}/resume")
    assert resumed["state"] == "pending"
    done = await api.wait_for(task_id, "completed")
    assert origin.requests_for("/file")[-1].range == f"bytes={kept}-"
    data = (downloads(api) / done["filename"]).read_bytes()
    assert hashlib.sha256(data).hexdigest() == payload_sha256(1_000_000, 5)
    names = [e["event"] for e in await api.events(task_id) if e["event"] != "download.progress"]
    assert names.count("download.paused") == 1


async def test_resume_of_a_completed_task_is_a_conflict(api: Api, origin: Origin) -> None:
    task = await api.submit(origin.url(size=1000))
    await api.wait_for(task["task_id"], "completed")
    for action in ("pause", "resume"):
        resp = await api.call("POST", f"/api/downloads/{task['task_id']}/{action}")
        assert resp.status == 409, action
        assert_error(await resp.json(), "conflict")


# -- delete ------------------------------------------------------------------------------


async def test_delete_keeps_the_file_unless_asked(api: Api, origin: Origin) -> None:
    kept = await api.submit(origin.url(size=1000), filename="kept.bin")
    gone = await api.submit(origin.url(size=1000), filename="gone.bin")
    for task in (kept, gone):
        await api.wait_for(task["task_id"], "completed")

    resp = await api.call("DELETE", f"/api/downloads/{kept['task_id']}")
    assert resp.status == 204
    resp = await api.call("DELETE", f"/api/downloads/{gone['task_id']}?delete_file=true")
    assert resp.status == 204

    assert (downloads(api) / "kept.bin").exists()
    assert not (downloads(api) / "gone.bin").exists()
    for task in (kept, gone):
        resp = await api.call("GET", f"/api/downloads/{task['task_id']}")
        assert resp.status == 404
        resp = await api.call("GET", f"/api/progress/{task['task_id']}")
        assert resp.status == 404
    assert await api.tasks() == []


async def test_delete_of_a_running_task_stops_it_and_removes_the_part(
    api: Api, origin: Origin
) -> None:
    task = await api.submit(origin.url(**SLOW), filename="running.bin")
    await api.wait_bytes(task["task_id"], 1)
    resp = await api.call("DELETE", f"/api/downloads/{task['task_id']}?delete_file=true")
    assert resp.status == 204
    assert not (downloads(api) / "running.bin.part").exists()
    assert not (downloads(api) / "running.bin").exists()


# -- list --------------------------------------------------------------------------------


async def test_list_filters_by_state_and_pages_with_a_cursor(api: Api, origin: Origin) -> None:
    done = [await api.submit(origin.url(size=1000, seed=i)) for i in range(5)]
    for task in done:
        await api.wait_for(task["task_id"], "completed")
    failed = await api.submit(origin.url(status=404))
    await api.wait_for(failed["task_id"], "failed")

    everything = await api.tasks()
    assert [t["task_id"] for t in everything] == [t["task_id"] for t in [*done, failed]]
    assert [t["task_id"] for t in await api.tasks("?state=failed")] == [failed["task_id"]]
    completed = await api.tasks("?state=completed")
    assert {t["task_id"] for t in completed} == {t["task_id"] for t in done}
    both = await api.tasks("?state=failed&state=completed")
    assert len(both) == 6

    seen: list[str] = []
    cursor = ""
    pages = 0
    while True:
        page = await api.json("GET", f"/api/downloads?limit=2{cursor}")
        assert len(page["tasks"]) <= 2
        seen += [t["task_id"] for t in page["tasks"]]
        pages += 1
        if page["next_cursor"] is None:
            break
        cursor = f"&cursor={page['next_cursor']}"
    assert seen == [t["task_id"] for t in everything]
    assert pages == 3


@pytest.mark.parametrize(
    "query", ["?limit=0", "?limit=abc", "?limit=100000", "?state=bogus", "?cursor=%%%"]
)
async def test_list_rejects_bad_parameters(api: Api, query: str) -> None:
    resp = await api.call("GET", f"/api/downloads{query}")
    assert resp.status == 400
    assert_error(await resp.json())


# -- file names --------------------------------------------------------------------------


async def test_two_tasks_with_one_filename_get_distinct_files(api: Api, origin: Origin) -> None:
    first = await api.submit(origin.url(size=1000, seed=1), filename="same.bin")
    second = await api.submit(origin.url(size=2000, seed=2), filename="same.bin")
    one = await api.wait_for(first["task_id"], "completed")
    two = await api.wait_for(second["task_id"], "completed")
    assert one["filename"] != two["filename"]
    assert (downloads(api) / one["filename"]).read_bytes() == payload(1000, 1)
    assert (downloads(api) / two["filename"]).read_bytes() == payload(2000, 2)


async def test_two_tasks_with_one_origin_name_get_distinct_files(api: Api, origin: Origin) -> None:
    tasks = [await api.submit(origin.url("/file/clip.bin", size=1000, seed=i)) for i in range(3)]
    names = {(await api.wait_for(t["task_id"], "completed"))["filename"] for t in tasks}
    assert len(names) == 3
    assert "clip.bin" in names


# -- idempotency -------------------------------------------------------------------------


async def test_idempotency_key_returns_the_first_task(api: Api, origin: Origin) -> None:
    headers = {"Idempotency-Key": "order-42"}
    body = {"url": origin.url(size=1000)}
    first = await api.call("POST", "/api/downloads", json=body, headers=headers)
    assert first.status == 201
    again = await api.call("POST", "/api/downloads", json=body, headers=headers)
    assert again.status == 200
    assert (await again.json())["task_id"] == (await first.json())["task_id"]
    assert len(await api.tasks()) == 1

    other = await api.call("POST", "/api/downloads", json=body, headers={"Idempotency-Key": "x"})
    assert other.status == 201
    assert len(await api.tasks()) == 2


async def test_idempotency_keys_are_per_api_key(api: Api, origin: Origin) -> None:
    other_key = await api.new_key("other")
    headers = {"Idempotency-Key": "shared"}
    body = {"url": origin.url(size=1000)}
    mine = await api.call("POST", "/api/downloads", json=body, headers=headers)
    theirs = await api.call("POST", "/api/downloads", json=body, headers=headers, key=other_key)
    assert mine.status == theirs.status == 201
    assert (await mine.json())["task_id"] != (await theirs.json())["task_id"]


async def test_concurrent_requests_with_one_idempotency_key_make_one_task(
    api: Api, origin: Origin
) -> None:
    body = {"url": origin.url(size=1000)}
    headers = {"Idempotency-Key": "double-click"}
    responses = await asyncio.gather(
        *(api.call("POST", "/api/downloads", json=body, headers=headers) for _ in range(5))
    )
    assert sorted(r.status for r in responses) == [200, 200, 200, 200, 201]
    ids = {(await r.json())["task_id"] for r in responses}
    assert len(ids) == 1
    assert [t["task_id"] for t in await api.tasks()] == list(ids)


async def test_idempotency_key_with_another_body_is_a_conflict(api: Api, origin: Origin) -> None:
    headers = {"Idempotency-Key": "order-43"}
    body = {"url": origin.url(size=1000), "sha256": "A" * 64}
    first = await api.call("POST", "/api/downloads", json=body, headers=headers)
    assert first.status == 201
    task_id = (await first.json())["task_id"]

    for changed in (
        {**body, "url": origin.url(size=2000)},
        {**body, "filename": "other.bin"},
        {**body, "max_speed_mbps": 5},
        {"url": body["url"]},
    ):
        resp = await api.call("POST", "/api/downloads", json=changed, headers=headers)
        assert resp.status == 409, changed
        assert_error(await resp.json(), "idempotency_conflict")
    assert [t["task_id"] for t in await api.tasks()] == [task_id]

    # The same request written differently (key order, spacing, the checksum's case, a null
    # for a field not given) is the same request: 200 with the first task.
    same = '{"sha256": "' + "a" * 64 + '",   "url": "' + body["url"] + '", "filename": null}'
    again = await api.call(
        "POST",
        "/api/downloads",
        data=same,
        headers={**headers, "Content-Type": "application/json"},
    )
    assert again.status == 200
    assert (await again.json())["task_id"] == task_id
