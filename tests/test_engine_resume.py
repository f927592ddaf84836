"""Validated resume: the bytes on disk are only continued when the origin proves they fit."""

from __future__ import annotations

import asyncio

from aiohttp import web

from tests.conftest import MakeApi
from tests.enginekit import FAST_RETRIES, TinyOrigin, downloaded, errors, restarts, sha256_file
from tests.origins import Origin, payload, payload_sha256

SIZE = 1_200_000
# The origin hangs up after 600 kB, having paused a second one byte before: aiohttp drops
# what is still in its buffer when a connection breaks, and the pause lets even a loaded
# machine write what arrived, so there is a partial file to resume from.
DROP = {"drop_after": 600_000, "drop_times": 1, "stall_after": 599_999, "stall": 1}


async def test_origin_ignoring_range_restarts_from_zero(make_api: MakeApi, origin: Origin) -> None:
    api = await make_api(**FAST_RETRIES)
    url = origin.url("/file/nr.bin", size=SIZE, seed=2, no_range=1, stall_times=1, **DROP)
    task = await api.submit(url)
    done = await api.wait_for(task["task_id"], "completed")

    assert sha256_file(downloaded(api, done)) == payload_sha256(SIZE, 2)
    requests = origin.requests_for("/file/nr.bin")
    assert requests[1].range is not None  # it did try to resume ...
    (restart,) = restarts(await api.events(task["task_id"]))  # ... and said why it could not
    assert restart["reason"] == "origin does not support ranges"
    assert restart["state"] == "downloading"


async def test_changed_etag_restarts_from_zero(make_api: MakeApi, origin: Origin) -> None:
    api = await make_api(**FAST_RETRIES)
    # change_content: every response is a new version with new bytes and a new ETag.
    url = origin.url("/file/v.bin", size=SIZE, seed=10, change_content=1, stall_times=1, **DROP)
    task = await api.submit(url)
    done = await api.wait_for(task["task_id"], "completed")

    requests = origin.requests_for("/file/v.bin")
    assert requests[1].headers.get("If-Range") == f'"11-{SIZE}-1"'
    (restart,) = restarts(await api.events(task["task_id"]))
    assert restart["reason"] == "the file changed on the origin"
    # Not a mix of two versions: exactly the second one (seed 10 + request number 2).
    assert sha256_file(downloaded(api, done)) == payload_sha256(SIZE, 12)


async def test_wrong_content_range_restarts_from_zero(make_api: MakeApi) -> None:
    api = await make_api(**FAST_RETRIES)
    data = payload(SIZE, 3)
    served = 0

    async def handler(request: web.Request) -> web.StreamResponse:
        nonlocal served
        served += 1
        headers = {"ETag": '"v1"', "Accept-Ranges": "bytes"}
        if served == 1:  # the first answer breaks off half-way
            resp = web.StreamResponse(headers=headers)
            resp.content_length = SIZE
            await resp.prepare(request)
            await resp.write(data[: SIZE // 2])
            await asyncio.sleep(1)  # time to write what arrived before the hang-up
            assert request.transport is not None
            request.transport.close()
            return resp
        if request.headers.get("Range"):  # then a 206 for bytes that were not asked for
            headers["Content-Range"] = f"bytes 100-{SIZE - 1}/{SIZE}"
            return web.Response(status=206, body=data[100:], headers=headers)
        return web.Response(body=data, headers=headers)

    async with TinyOrigin(handler) as tiny:
        task = await api.submit(tiny.url("/f.bin"))
        done = await api.wait_for(task["task_id"], "completed")
        ranges = [r.headers.get("Range") for r in tiny.requests]

    assert sha256_file(downloaded(api, done)) == payload_sha256(SIZE, 3)
    assert ranges[0] is None and ranges[1] is not None and ranges[2] is None
    (restart,) = restarts(await api.events(task["task_id"]))
    assert "bytes 100-" in restart["reason"]


async def test_short_body_is_never_completed(make_api: MakeApi, origin: Origin) -> None:
    api = await make_api(max_retries=2, **FAST_RETRIES)
    # Every response promises SIZE bytes and closes 10 bytes early.
    task = await api.submit(origin.url("/file/short.bin", size=SIZE, short=10))
    failed = await api.wait_for(task["task_id"], "failed")

    assert failed["error"]["type"] == "network_error"
    assert failed["result"] is None
    assert not (api.settings.downloads_dir / "short.bin").exists()
    assert len(errors(await api.events(task["task_id"]))) == 3


async def test_lying_content_length_is_never_completed(make_api: MakeApi, origin: Origin) -> None:
    api = await make_api(max_retries=1, **FAST_RETRIES)
    task = await api.submit(origin.url("/file/lie.bin", size=SIZE, lie_length=SIZE + 1000))
    failed = await api.wait_for(task["task_id"], "failed")
    assert failed["error"]["type"] == "network_error"
    assert not (api.settings.downloads_dir / "lie.bin").exists()


async def test_sha256_is_checked_at_the_end(make_api: MakeApi, origin: Origin) -> None:
    api = await make_api(**FAST_RETRIES)
    url = origin.url("/file/sum.bin", size=SIZE, seed=4, drop_after=500_000, drop_times=1)
    good = await api.submit(url + "&rate=4000000", sha256=payload_sha256(SIZE, 4))
    bad = await api.submit(origin.url("/file/bad.bin", size=SIZE), sha256="0" * 64)

    await api.wait_for(good["task_id"], "completed")
    failed = await api.wait_for(bad["task_id"], "failed")
    assert failed["error"]["type"] == "checksum_mismatch"
    assert not (api.settings.downloads_dir / "bad.bin").exists()


async def test_download_without_content_length(make_api: MakeApi, origin: Origin) -> None:
    api = await make_api(**FAST_RETRIES)
    task = await api.submit(origin.url("/file/nl.bin", size=SIZE, seed=8, no_length=1))
    done = await api.wait_for(task["task_id"], "completed")
    assert sha256_file(downloaded(api, done)) == payload_sha256(SIZE, 8)
    assert done["progress"]["total_bytes"] == SIZE


async def test_a_part_file_already_complete_is_not_downloaded_again(
    make_api: MakeApi, origin: Origin
) -> None:
    """As after a crash between the last write and the rename: the origin answers the
    resume with 416, whose Content-Range shows the part file is the whole file."""
    api = await make_api()
    url = origin.url("/file/whole.bin", size=SIZE, seed=13, rate=400_000)
    task = await api.submit(url)
    await api.wait_bytes(task["task_id"], 100_000)
    paused = await api.json("POST", f"/api/downloads/{task['task_id']}/pause")
    (api.settings.downloads_dir / "whole.bin.part").write_bytes(payload(SIZE, 13))

    await api.json("POST", f"/api/downloads/{task['task_id']}/resume")
    done = await api.wait_for(paused["task_id"], "completed")
    assert sha256_file(downloaded(api, done)) == payload_sha256(SIZE, 13)
    assert origin.requests_for("/file/whole.bin")[-1].range == f"bytes={SIZE}-"
    assert restarts(await api.events(task["task_id"])) == []


async def test_a_weak_etag_resumes_against_last_modified(make_api: MakeApi) -> None:
    api = await make_api(**FAST_RETRIES)
    data = payload(SIZE, 14)
    modified = "Tue, 14 Nov 2023 22:13:20 GMT"
    served = 0

    async def handler(request: web.Request) -> web.StreamResponse:
        nonlocal served
        served += 1
        # A weak ETag cannot be used in If-Range (RFC 9110 13.1.5); the date can.
        headers = {"ETag": 'W/"weak"', "Last-Modified": modified, "Accept-Ranges": "bytes"}
        start = 0
        if request.headers.get("If-Range") == modified and request.headers.get("Range"):
            start = int(request.headers["Range"][6:-1])
            headers["Content-Range"] = f"bytes {start}-{SIZE - 1}/{SIZE}"
        resp = web.StreamResponse(status=206 if start else 200, headers=headers)
        resp.content_length = SIZE - start
        await resp.prepare(request)
        if served == 1:
            await resp.write(data[: SIZE // 2])
            await asyncio.sleep(1)  # time to write what arrived before the hang-up
            assert request.transport is not None
            request.transport.close()
            return resp
        await resp.write(data[start:])
        return resp

    async with TinyOrigin(handler) as tiny:
        task = await api.submit(tiny.url("/weak.bin"))
        done = await api.wait_for(task["task_id"], "completed")
        resumed = tiny.requests[-1].headers

    assert sha256_file(downloaded(api, done)) == payload_sha256(SIZE, 14)
    assert resumed.get("If-Range") == modified
    assert resumed.get("Range") == f"bytes={SIZE // 2}-"
    assert restarts(await api.events(task["task_id"])) == []


async def test_no_validator_restarts_from_zero(make_api: MakeApi) -> None:
    api = await make_api(**FAST_RETRIES)
    data = payload(SIZE, 15)
    served = 0

    async def handler(request: web.Request) -> web.StreamResponse:
        nonlocal served
        served += 1
        resp = web.StreamResponse(headers={"Accept-Ranges": "bytes"})  # no ETag, no date
        resp.content_length = SIZE
        await resp.prepare(request)
        if served == 1:
            await resp.write(data[: SIZE // 2])
            await asyncio.sleep(1)
            assert request.transport is not None
            request.transport.close()
            return resp
        await resp.write(data)
        return resp

    async with TinyOrigin(handler) as tiny:
        task = await api.submit(tiny.url("/nv.bin"))
        done = await api.wait_for(task["task_id"], "completed")
        ranges = [r.headers.get("Range") for r in tiny.requests]

    # Without a validator a resumed range could splice two versions: start over instead.
    assert ranges == [None, None]
    assert sha256_file(downloaded(api, done)) == payload_sha256(SIZE, 15)
    (restart,) = restarts(await api.events(task["task_id"]))
    assert restart["reason"] == "origin gave no validator to resume against"
