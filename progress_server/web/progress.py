"""Polling: the guide's progress response, served from the in-memory snapshot."""

from __future__ import annotations

import hashlib
import json

from aiohttp import web

from progress_server.appkeys import QUERIES
from progress_server.web.auth import principal
from progress_server.web.errors import ApiError, not_found
from progress_server.web.requests import int_param, is_task_id

MAX_BATCH = 200


def _matches(request: web.Request, etag: str) -> bool:
    wanted = request.headers.get("If-None-Match")
    if not wanted:
        return False
    return any(tag.strip() in (etag, "*", "W/" + etag) for tag in wanted.split(","))


async def get_progress(request: web.Request) -> web.Response:
    snapshot = request.app[QUERIES].snapshot(principal(request), request.match_info["task_id"])
    if snapshot is None:
        raise not_found()
    headers = {"ETag": snapshot.etag, "Cache-Control": "no-cache"}
    if _matches(request, snapshot.etag):
        return web.Response(status=304, headers=headers)
    return web.Response(body=snapshot.body, content_type="application/json", headers=headers)


async def get_progress_batch(request: web.Request) -> web.Response:
    who = principal(request)
    ids = request.query.getall("task_id", [])
    if not ids:
        raise ApiError(400, "name at least one task_id")
    if len(ids) > MAX_BATCH:
        raise ApiError(400, f"at most {MAX_BATCH} task_id values per request")
    if not all(is_task_id(task_id) for task_id in ids):
        raise ApiError(400, "every task_id must be a task id (a UUID)")
    # Unknown and foreign ids are named alike in `missing`, so a batch reveals nothing a
    # single poll would not; duplicates are answered once.
    queries = request.app[QUERIES]
    found = {i: queries.snapshot(who, i) for i in dict.fromkeys(ids)}
    snapshots = [s for s in found.values() if s is not None]
    missing = [i for i, s in found.items() if s is None]
    tags = "".join(s.etag for s in snapshots) + "|" + ",".join(missing)
    etag = '"b' + hashlib.sha1(tags.encode()).hexdigest()[:20] + '"'
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    if _matches(request, etag):
        return web.Response(status=304, headers=headers)
    body = (
        b'{"tasks": ['
        + b", ".join(s.body for s in snapshots)
        + b'], "missing": '
        + json.dumps(missing).encode()
        + b"}"
    )
    return web.Response(body=body, content_type="application/json", headers=headers)


async def all_events(request: web.Request) -> web.Response:
    who = principal(request)
    after = int_param(request, "after_seq", 0, 0, 2**62)
    limit = int_param(request, "limit", 1000, 1, 5000)
    events = await request.app[QUERIES].history(who, after, limit)
    return web.json_response({"events": [e.to_wire() for e in events]})
