"""The status page: a server-rendered task table, login and logout, and form posts.

Everything works without JavaScript: each button is a real form that posts here and is
redirected back to `/`, so a reload always shows the truth. static/app.js then makes the
same page live over the WebSocket and sends the same actions through the REST API.
"""

from __future__ import annotations

from typing import Any

import aiohttp_jinja2
import jinja2
from aiohttp import web

from progress_server.appkeys import (
    KEYRING,
    LOGIN_LIMITER,
    MEDIA_TOOLS,
    QUERIES,
    SCHEDULER,
    SESSIONS,
)
from progress_server.auth import Principal
from progress_server.media.job import QUALITY_FORMATS
from progress_server.resources import templates_dir
from progress_server.sessions import Session
from progress_server.web.auth import client_address
from progress_server.web.errors import ApiError
from progress_server.web.pageview import DASH, STATE_LABELS, TaskRow, task_row
from progress_server.web.requests import new_task, visible_task
from progress_server.web.sessions import (
    COOKIE,
    CSRF_FIELD,
    clear_cookie,
    request_session,
    same_origin,
    set_cookie,
)
from progress_server.web.tasks import actions

# The page shows the newest tasks; the API's cursor pages reach the rest.
PAGE_LIMIT = 200
PRESETS = (
    ("", "Keep as downloaded"),
    ("mp4", "Transcode to MP4"),
    ("mp3", "Extract MP3 audio"),
    ("remux-mp4", "Remux into MP4"),
)
# The quality choice: each a yt-dlp format selector, which makes the task a media one
# (#13); the first leaves it to "auto" (a video site's page or a manifest is media).
QUALITIES = (
    ("", "Auto (file or video)"),
    (QUALITY_FORMATS["best"], "Best video"),
    (QUALITY_FORMATS["1080p"], "Video up to 1080p"),
    (QUALITY_FORMATS["720p"], "Video up to 720p"),
    (QUALITY_FORMATS["audio"], "Audio only"),
)

_PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}


def setup_templates(app: web.Application) -> None:
    env = aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(str(templates_dir())),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        default_helpers=False,
        trim_blocks=True,
        lstrip_blocks=True,
    )

    def asset(name: str) -> str:
        # The static route adds a content hash (?v=...), so browsers never run stale JS.
        return str(app.router["static"].url_for(filename=name))

    env.globals["asset"] = asset


def _render(
    request: web.Request, template: str, context: dict[str, Any], status: int = 200
) -> web.Response:
    response = aiohttp_jinja2.render_template(template, request, context, status=status)
    response.headers.update(_PAGE_HEADERS)
    return response


def _see_other(location: str = "/") -> web.Response:
    return web.Response(status=303, headers={"Location": location, "Cache-Control": "no-store"})


def _session(request: web.Request) -> tuple[Session, Principal] | None:
    session = request_session(request)
    if session is None:
        return None
    who = request.app[KEYRING].principal_by_id(session.key_id)
    return None if who is None else (session, who)


def _login_page(request: web.Request, status: int = 200, message: str = "") -> web.Response:
    response = _render(request, "login.html", {"message": message}, status)
    if COOKIE in request.cookies:
        clear_cookie(response)
    return response


def _field(form: Any, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def _check_origin(request: web.Request) -> None:
    # A browser always names the page a form was posted from; another site's page may not
    # post here, not even to /login (which would log the victim into the attacker's key).
    if "Origin" in request.headers and not same_origin(request):
        raise ApiError(403, "this form was posted from another site")


async def _form(request: web.Request) -> tuple[Any, Principal]:
    """The posted form of a logged-in session, after its CSRF token was checked."""
    _check_origin(request)
    found = _session(request)
    if found is None:
        raise ApiError(401, "your session has ended; log in again")
    session, who = found
    form = await request.post()
    if not session.csrf_matches(_field(form, CSRF_FIELD)):
        raise ApiError(403, "this form has expired; reload the page and try again")
    return form, who


# -- handlers ------------------------------------------------------------------------------


async def index(request: web.Request) -> web.Response:
    found = _session(request)
    if found is None:
        return _login_page(request)
    session, who = found
    queries = request.app[QUERIES]
    # Read before the tasks: events after this seq are replayed by the page's socket, so
    # nothing that happens while the page renders is missed.
    seq = queries.last_seq
    page = await queries.list_tasks(who, (), PAGE_LIMIT, 0, newest_first=True)
    rows = [task_row(task, queries.live_progress(task)) for task in page.tasks]
    context = {
        "who": who,
        "csrf": session.csrf_token,
        "seq": seq,
        "rows": rows,
        "more": page.next_after is not None,
        "limit": PAGE_LIMIT,
        "presets": PRESETS,
        "qualities": QUALITIES,
        "blank": _blank_row(),
    }
    return _render(request, "tasks.html", context)


async def login(request: web.Request) -> web.Response:
    _check_origin(request)
    limiter = request.app[LOGIN_LIMITER]
    address = client_address(request)
    wait = limiter.retry_after(address)
    if wait > 0:
        seconds = int(wait) + 1
        response = _login_page(
            request,
            429,
            f"Too many failed logins from your address. Wait {seconds} s, then try again.",
        )
        response.headers["Retry-After"] = str(seconds)
        return response
    form = await request.post()
    who = await request.app[KEYRING].authenticate(_field(form, "api_key"))
    if who is None:
        limiter.record_failure(address)
        return _login_page(request, 401, "That API key is not valid, or it has been revoked.")
    token, _ = await request.app[SESSIONS].create(who.key_id)
    response = _see_other()
    set_cookie(request, response, token)
    return response


async def logout(request: web.Request) -> web.Response:
    found = _session(request)
    if found is not None:
        await _form(request)
        await request.app[SESSIONS].end(found[0])
    response = _see_other()
    clear_cookie(response)
    return response


async def add_download(request: web.Request) -> web.Response:
    form, who = await _form(request)
    body: dict[str, Any] = {"url": _field(form, "url")}
    if filename := _field(form, "filename"):
        body["filename"] = filename
    if preset := _field(form, "preset"):
        body["post_process"] = {"transcode": preset}
    if media_format := _field(form, "format"):
        body["format"] = media_format
    # With the server's media tools, a transcode it cannot run is refused now, not later.
    new = new_task(body, None, request.app[MEDIA_TOOLS])
    await request.app[SCHEDULER].submit(who.key_id, new)
    return _see_other()


async def task_action(request: web.Request) -> web.Response:
    _, who = await _form(request)
    action = request.match_info["action"]
    task = await visible_task(request, who)
    scheduler = request.app[SCHEDULER]
    if action == "delete":
        # The page removes the task from the list; a finished file stays on disk.
        await scheduler.delete(task, delete_file=False)
    else:
        await actions(scheduler)[action](task)
    return _see_other()


def _blank_row() -> TaskRow:
    """The row static/app.js clones for a task that appears after the page was rendered."""
    label, icon = STATE_LABELS[next(iter(STATE_LABELS))]
    return TaskRow(
        task_id="",
        state="pending",
        state_label=label,
        state_icon=icon,
        name="",
        host="",
        percentage=0.0,
        bar_value=0.0,
        percentage_text=DASH,
        size_text=DASH,
        speed_text=DASH,
        eta_text=DASH,
        error_type="",
        error_message="",
    )
