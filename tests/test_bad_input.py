"""Bad input: a clear JSON error with the right 4xx, never a 5xx, and nothing stored."""

from __future__ import annotations

import json
import uuid

import pytest
from aiohttp import ClientResponse

from tests.apiclient import Api, assert_error, read_only_db
from tests.origins import Origin

GOOD_URL = "http://127.0.0.1:9/file"


def stored_task_count(api: Api) -> int:
    with read_only_db(api.store_path) as db:
        return int(db.execute("SELECT COUNT(*) FROM tasks").fetchone()[0])


async def assert_refused(
    api: Api, status: int, resp: ClientResponse, error_type: str | None = None
) -> None:
    text = await resp.text()
    assert resp.status == status, text
    assert resp.headers["Content-Type"].startswith("application/json"), text
    assert_error(json.loads(text), error_type)
    assert await api.tasks() == []
    assert stored_task_count(api) == 0


# -- the body ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b"{",
        b'{"url": ',
        b"not json",
        b"\xff\xfe",
        b'{"url": "http://x"}}',
        b"",
        b"[" * 60_000,
        b'{"url": "http://127.0.0.1:9/x", "filename": "\\ud800.bin"}',
        b'{"url": "http://127.0.0.1:9/\\udfff"}',
    ],
    ids=[
        "open-brace",
        "truncated",
        "text",
        "not-utf8",
        "trailing",
        "empty",
        "nested-too-deep",
        "lone-surrogate-filename",
        "lone-surrogate-url",
    ],
)
async def test_malformed_json_is_400(api: Api, raw: bytes) -> None:
    resp = await api.call(
        "POST", "/api/downloads", data=raw, headers={"Content-Type": "application/json"}
    )
    await assert_refused(api, 400, resp, "invalid_request")


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"url": None},
        {"url": ""},
        {"url": 42},
        {"url": ["http://a/"]},
        {"url": "ftp://example.com/file"},
        {"url": "file:///etc/passwd"},
        {"url": "javascript:alert(1)"},
        {"url": "example.com/file"},
        {"url": "http://"},
        {"url": "http:///path-only"},
        {"url": "http://exa mple.com/"},
        {"url": "http://example.com:99999/"},
        {"url": "http://example.com/" + "a" * 9000},
        # urlsplit takes it, the download client would not (found by schemathesis).
        {"url": "http://0\\@127.0.0.1/"},
        {"url": GOOD_URL, "filename": 7},
        {"url": GOOD_URL, "filename": None, "sha256": 12},
        {"url": GOOD_URL, "sha256": "abc"},
        {"url": GOOD_URL, "sha256": "g" * 64},
        {"url": GOOD_URL, "unknown_field": 1},
        [GOOD_URL],
        "http://example.com/",
        None,
        12,
    ],
)
async def test_invalid_fields_are_422(api: Api, body: object) -> None:
    resp = await api.call(
        "POST",
        "/api/downloads",
        data=json.dumps(body),
        headers={"Content-Type": "application/json"},
    )
    await assert_refused(api, 422, resp, "validation_error")


@pytest.mark.parametrize(
    "filename",
    [
        "a/b.bin",
        "/etc/passwd",
        "a\\b.bin",
        "..",
        "../escape.bin",
        "x..y",
        "nul\x00byte.bin",
        ".hidden",
        ".",
        "a" * 256,
        "é" * 128,  # 256 bytes in UTF-8
        "",
        "name.part",
        "tab\there",
    ],
    ids=repr,
)
async def test_bad_filenames_are_422(api: Api, filename: str) -> None:
    resp = await api.call("POST", "/api/downloads", json={"url": GOOD_URL, "filename": filename})
    await assert_refused(api, 422, resp, "validation_error")


async def test_longest_plain_filename_is_accepted(api: Api, origin: Origin) -> None:
    name = "a" * 251 + ".bin"
    task = await api.submit(origin.url(size=10), filename=name)
    done = await api.wait_for(task["task_id"], "completed")
    assert done["filename"] == name


async def test_oversized_body_is_413(api: Api) -> None:
    big = {"url": GOOD_URL, "filename": "x" * (api.settings.max_body_bytes + 10)}
    resp = await api.call("POST", "/api/downloads", json=big)
    await assert_refused(api, 413, resp, "payload_too_large")


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]
)
async def test_non_json_content_type_is_415(api: Api, content_type: str) -> None:
    resp = await api.call(
        "POST",
        "/api/downloads",
        data=json.dumps({"url": GOOD_URL}),
        headers={"Content-Type": content_type},
    )
    await assert_refused(api, 415, resp, "unsupported_media_type")


async def test_bad_idempotency_key_is_400(api: Api) -> None:
    resp = await api.call(
        "POST", "/api/downloads", json={"url": GOOD_URL}, headers={"Idempotency-Key": "k" * 500}
    )
    await assert_refused(api, 400, resp)


# -- ids, routes and methods -------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/api/downloads/{id}",
        "/api/downloads/{id}/events",
        "/api/downloads/{id}/file",
        "/api/progress/{id}",
    ],
)
@pytest.mark.parametrize("task_id", [str(uuid.uuid4()), "not-a-uuid", "..%2F..%2Fetc"])
async def test_unknown_task_is_404(api: Api, path: str, task_id: str) -> None:
    resp = await api.call("GET", path.format(id=task_id))
    await assert_refused(api, 404, resp, "not_found")


@pytest.mark.parametrize("action", ["cancel", "retry", "pause", "resume"])
async def test_action_on_unknown_task_is_404(api: Api, action: str) -> None:
    resp = await api.call("POST", f"/api/downloads/{uuid.uuid4()}/{action}")
    await assert_refused(api, 404, resp, "not_found")
    resp = await api.call("DELETE", f"/api/downloads/{uuid.uuid4()}")
    await assert_refused(api, 404, resp, "not_found")


async def test_unknown_route_is_404(api: Api) -> None:
    resp = await api.call("GET", "/api/nothing-here")
    await assert_refused(api, 404, resp, "not_found")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PUT", "/api/downloads"),
        ("DELETE", "/api/downloads"),
        ("PATCH", "/api/downloads/{id}"),
        ("GET", "/api/downloads/{id}/cancel"),
        ("POST", "/api/progress/{id}"),
        ("POST", "/healthz"),
    ],
)
async def test_wrong_method_is_405(api: Api, method: str, path: str) -> None:
    resp = await api.call(method, path.format(id=uuid.uuid4()), json={"url": GOOD_URL})
    await assert_refused(api, 405, resp, "method_not_allowed")
    assert "Allow" in resp.headers


@pytest.mark.parametrize(
    "query", ["?delete_file=maybe", "?after_seq=-1", "?after_seq=x", "?limit=0"]
)
async def test_bad_query_parameters_are_400(api: Api, origin: Origin, query: str) -> None:
    task = await api.submit(origin.url(size=10))
    await api.wait_for(task["task_id"], "completed")
    method = "DELETE" if "delete_file" in query else "GET"
    path = f"/api/downloads/{task['task_id']}" + ("" if method == "DELETE" else "/events")
    resp = await api.call(method, path + query)
    assert resp.status == 400
    assert_error(await resp.json(), "invalid_request")
    assert [t["task_id"] for t in await api.tasks()] == [task["task_id"]]


async def test_batch_poll_without_ids_is_400(api: Api) -> None:
    resp = await api.call("GET", "/api/progress")
    assert resp.status == 400
    assert_error(await resp.json())
