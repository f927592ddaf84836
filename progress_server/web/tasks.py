"""REST handlers for download tasks."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import quote

from aiohttp import web

from progress_server.appkeys import MEDIA_TOOLS, QUERIES, SCHEDULER
from progress_server.models import Task
from progress_server.queries import TaskQueries
from progress_server.scheduler import Scheduler
from progress_server.web.auth import principal
from progress_server.web.requests import (
    bool_param,
    decode_cursor,
    encode_cursor,
    int_param,
    json_object,
    new_task,
    states_param,
    visible_task,
)

Action = Callable[[Task], Awaitable[Task]]


def record(queries: TaskQueries, task: Task) -> dict[str, object]:
    return {**task.to_wire(queries.live_progress(task)), **queries.live_fields(task)}


async def create_download(request: web.Request) -> web.Response:
    who = principal(request)
    new = new_task(
        await json_object(request),
        request.headers.get("Idempotency-Key"),
        request.app[MEDIA_TOOLS],
    )
    task, created = await request.app[SCHEDULER].submit(who.key_id, new)
    location = f"/api/downloads/{task.task_id}"
    return web.json_response(
        record(request.app[QUERIES], task),
        status=201 if created else 200,
        headers={"Location": location},
    )


async def list_downloads(request: web.Request) -> web.Response:
    who = principal(request)
    queries = request.app[QUERIES]
    limit = int_param(request, "limit", 50, 1, 500)
    after = decode_cursor(request.query.get("cursor"))
    page = await queries.list_tasks(who, states_param(request), limit, after)
    next_cursor = None if page.next_after is None else encode_cursor(page.next_after)
    return web.json_response(
        {"tasks": [record(queries, t) for t in page.tasks], "next_cursor": next_cursor}
    )


async def get_download(request: web.Request) -> web.Response:
    task = await visible_task(request, principal(request))
    return web.json_response(record(request.app[QUERIES], task))


def actions(scheduler: Scheduler) -> dict[str, Action]:
    """The task actions by the name a route or form uses, as the scheduler's methods."""
    return {
        "cancel": scheduler.cancel,
        "retry": scheduler.retry,
        "pause": scheduler.pause,
        "resume": scheduler.resume,
    }


async def _act(request: web.Request, action: str) -> web.Response:
    task = await visible_task(request, principal(request))
    task = await actions(request.app[SCHEDULER])[action](task)
    return web.json_response(record(request.app[QUERIES], task))


async def cancel_download(request: web.Request) -> web.Response:
    return await _act(request, "cancel")


async def retry_download(request: web.Request) -> web.Response:
    return await _act(request, "retry")


async def pause_download(request: web.Request) -> web.Response:
    return await _act(request, "pause")


async def resume_download(request: web.Request) -> web.Response:
    return await _act(request, "resume")


async def delete_download(request: web.Request) -> web.Response:
    task = await visible_task(request, principal(request))
    delete_file = bool_param(request, "delete_file")
    await request.app[SCHEDULER].delete(task, delete_file)
    return web.Response(status=204)


async def download_file(request: web.Request) -> web.StreamResponse:
    task = await visible_task(request, principal(request))
    path = request.app[QUERIES].finished_file(task)
    response = web.FileResponse(path, chunk_size=256 * 1024)
    response.headers["Content-Disposition"] = _attachment(path.name)
    return response


def _attachment(name: str) -> str:
    ascii_name = name.encode("ascii", "replace").decode().replace('"', "_").replace("?", "_")
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name)}"


async def task_events(request: web.Request) -> web.Response:
    task = await visible_task(request, principal(request))
    after = int_param(request, "after_seq", 0, 0, 2**62)
    limit = int_param(request, "limit", 1000, 1, 5000)
    events = await request.app[QUERIES].task_history(task, after, limit)
    return web.json_response({"events": [e.to_wire() for e in events]})
