"""REST handlers for download tasks."""

from __future__ import annotations

from urllib.parse import quote

from aiohttp import web

from progress_server.appkeys import MEDIA_TOOLS, SCHEDULER, SETTINGS
from progress_server.models import Task, TaskState
from progress_server.scheduler import Conflict, Scheduler
from progress_server.web.auth import principal
from progress_server.web.errors import ApiError
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


def record(scheduler: Scheduler, task: Task) -> dict[str, object]:
    return task.to_wire(scheduler.live_progress(task))


def _unavailable() -> ApiError:
    return ApiError(503, "the server is shutting down", "unavailable", {"Retry-After": "5"})


async def create_download(request: web.Request) -> web.Response:
    who = principal(request)
    scheduler = request.app[SCHEDULER]
    new = new_task(
        await json_object(request),
        request.headers.get("Idempotency-Key"),
        request.app[MEDIA_TOOLS],
    )
    if not scheduler.accepting:
        raise _unavailable()
    task, created = await scheduler.submit(who.key_id, new)
    location = f"/api/downloads/{task.task_id}"
    return web.json_response(
        record(scheduler, task), status=201 if created else 200, headers={"Location": location}
    )


async def list_downloads(request: web.Request) -> web.Response:
    who = principal(request)
    scheduler = request.app[SCHEDULER]
    limit = int_param(request, "limit", 50, 1, 500)
    after = decode_cursor(request.query.get("cursor"))
    # One extra row tells whether another page exists without a second query.
    tasks = await scheduler.store.list_tasks(
        who.owner_filter, states_param(request), limit + 1, after
    )
    next_cursor = encode_cursor(tasks[limit - 1].order) if len(tasks) > limit else None
    return web.json_response(
        {"tasks": [record(scheduler, t) for t in tasks[:limit]], "next_cursor": next_cursor}
    )


async def get_download(request: web.Request) -> web.Response:
    task = await visible_task(request, principal(request))
    return web.json_response(record(request.app[SCHEDULER], task))


async def _act(request: web.Request, action: str) -> web.Response:
    task = await visible_task(request, principal(request))
    scheduler = request.app[SCHEDULER]
    if action in ("retry", "resume") and not scheduler.accepting:
        raise _unavailable()
    try:
        task = await getattr(scheduler, action)(task)
    except Conflict as exc:
        raise ApiError(409, str(exc)) from exc
    return web.json_response(record(scheduler, task))


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
    if task.state is not TaskState.COMPLETED or not task.filename:
        raise ApiError(409, f"the task is {task.state.value}; its file is ready once completed")
    path = request.app[SETTINGS].downloads_dir / task.filename
    if not path.is_file():
        raise ApiError(404, "the file is no longer on disk", "not_found")
    response = web.FileResponse(path, chunk_size=256 * 1024)
    response.headers["Content-Disposition"] = _attachment(task.filename)
    return response


def _attachment(name: str) -> str:
    ascii_name = name.encode("ascii", "replace").decode().replace('"', "_").replace("?", "_")
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name)}"


async def task_events(request: web.Request) -> web.Response:
    task = await visible_task(request, principal(request))
    after = int_param(request, "after_seq", 0, 0, 2**62)
    limit = int_param(request, "limit", 1000, 1, 5000)
    events = await request.app[SCHEDULER].bus.history(after, task_ids=[task.task_id], limit=limit)
    return web.json_response({"events": [e.to_wire() for e in events]})
