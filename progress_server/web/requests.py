"""Reading request input: JSON bodies, query parameters, task lookups. Errors are 4xx."""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from yarl import URL

from progress_server import filenames
from progress_server.appkeys import QUERIES
from progress_server.auth import Principal
from progress_server.media import source as media_source
from progress_server.models import Task, TaskState
from progress_server.new_task import NewTask
from progress_server.processing.options import InvalidPostProcess, accept_post_process
from progress_server.processing.tools import MediaTools
from progress_server.web.errors import ApiError, not_found

MAX_URL_LENGTH = 8192
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
_INTEGER = re.compile(r"-?[0-9]{1,20}")
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_TASK_FIELDS = {"url", "filename", "sha256", "post_process", "max_speed_mbps", "segments"}
_MEDIA_FIELDS = {"source", "format", "playlist"}
MAX_SEGMENTS = 16


async def json_object(request: web.Request) -> dict[str, Any]:
    if request.content_type != "application/json":
        raise ApiError(415, "send the body as application/json")
    raw = await request.read()
    try:
        body = json.loads(raw)
        # "\ud800" parses into a lone surrogate, which no file name, URL or SQLite text can
        # hold; refused here rather than failing deep inside as a 500.
        json.dumps(body, ensure_ascii=False).encode()
    except (json.JSONDecodeError, UnicodeError) as exc:
        raise ApiError(400, f"request body is not valid JSON: {exc}") from exc
    except RecursionError as exc:
        raise ApiError(400, "request body is nested too deeply") from exc
    if not isinstance(body, dict):
        raise ApiError(422, "request body must be a JSON object")
    return body


def new_task(
    body: dict[str, Any], idempotency_key: str | None, tools: MediaTools | None = None
) -> NewTask:
    """The task a request asks for. With `tools`, a transcode this server cannot run (no
    ffmpeg) is refused too; without, only the post_process options themselves are checked."""
    unknown = sorted(set(body) - _TASK_FIELDS - _MEDIA_FIELDS)
    if unknown:
        raise ApiError(422, f"unknown field(s): {', '.join(unknown)}")
    url = body.get("url")
    if not isinstance(url, str) or not url:
        raise ApiError(422, "'url' is required and must be a string")
    check_url(url)
    filename = body.get("filename")
    if filename is not None:
        if not isinstance(filename, str):
            raise ApiError(422, "'filename' must be a string")
        problem = filenames.user_filename_problem(filename)
        if problem:
            raise ApiError(422, problem)
    sha256 = body.get("sha256")
    if sha256 is not None and (not isinstance(sha256, str) or not _SHA256.match(sha256)):
        raise ApiError(422, "'sha256' must be 64 hexadecimal characters")
    options: dict[str, Any] = {}
    speed = body.get("max_speed_mbps")
    if speed is not None:
        if isinstance(speed, bool) or not isinstance(speed, int | float) or not 0 < speed <= 1e6:
            raise ApiError(422, "'max_speed_mbps' must be a positive number")
        options["max_speed_mbps"] = speed
    segments = body.get("segments")
    if segments is not None:
        # bool is an int in Python; `true` is not a number of connections.
        if isinstance(segments, bool) or not isinstance(segments, int):
            raise ApiError(422, "'segments' must be a whole number from 1 to 16")
        if not 1 <= segments <= MAX_SEGMENTS:
            raise ApiError(422, "'segments' must be a whole number from 1 to 16")
        options["segments"] = segments
    post_process = body.get("post_process")
    if post_process is not None:
        try:
            options["post_process"] = accept_post_process(post_process, tools)
        except InvalidPostProcess as exc:
            raise ApiError(422, str(exc)) from exc
    requested_source = media_options(body, options)
    if idempotency_key is not None and not 0 < len(idempotency_key) <= 200:
        raise ApiError(400, "Idempotency-Key must be 1 to 200 characters")
    return NewTask(url, filename, sha256, options, idempotency_key, requested_source)


def media_options(body: dict[str, Any], options: dict[str, Any]) -> str:
    """The media fields (#13): the source asked for; `format` and `playlist` into options."""
    requested = body.get("source")
    if requested is None:
        requested = "auto"
    if not isinstance(requested, str) or requested not in media_source.SOURCES:
        raise ApiError(422, f"'source' must be one of {', '.join(media_source.SOURCES)}")
    if requested == "media" and not media_source.media_available():
        raise ApiError(422, media_source.MISSING_MESSAGE)
    selector, playlist = body.get("format"), body.get("playlist")
    if requested == "http" and (selector is not None or playlist is not None):
        raise ApiError(
            422, "'format' and 'playlist' apply to media sources, not \"source\": \"http\""
        )
    if selector is not None:
        if not isinstance(selector, str):
            raise ApiError(422, "'format' must be a string (a yt-dlp format selector)")
        if not media_source.media_available():
            raise ApiError(422, media_source.MISSING_MESSAGE)
        # yt-dlp itself reads the selector when the task is submitted (media_source).
        problem = media_source.format_shape_problem(selector)
        if problem:
            raise ApiError(422, problem)
        options["format"] = selector
    if playlist is not None:
        if not isinstance(playlist, bool):
            raise ApiError(422, "'playlist' must be true or false")
        options["playlist"] = playlist
    return requested


def check_url(url: str) -> None:
    if len(url) > MAX_URL_LENGTH:
        raise ApiError(422, f"'url' must be at most {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
        # The downloader parses with yarl, which is stricter than urlsplit (a backslash in
        # the host, for one): refuse here what it would refuse later.
        URL(url)
    except ValueError as exc:
        raise ApiError(422, f"'url' is not a valid URL: {exc}") from exc
    if parts.scheme not in ("http", "https"):
        raise ApiError(422, "'url' must be an http:// or https:// URL")
    if not parts.hostname:
        raise ApiError(422, "'url' must name a host")
    if port == 0:
        raise ApiError(422, "'url' must not use port 0")
    if any(c in url for c in "\x00\r\n\t "):
        raise ApiError(422, "'url' must not contain white space or control characters")


def int_param(request: web.Request, name: str, default: int, minimum: int, maximum: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    # Plain ASCII digits only: int() would also take "", " 5", "+5", "5_0" and other
    # scripts' digits, which the API document does not call integers.
    if not _INTEGER.fullmatch(raw):
        raise ApiError(400, f"'{name}' must be an integer")
    value = int(raw)
    if not minimum <= value <= maximum:
        raise ApiError(400, f"'{name}' must be between {minimum} and {maximum}")
    return value


def bool_param(request: web.Request, name: str) -> bool:
    raw = request.query.get(name, "false").lower()
    if raw in ("1", "true", "yes"):
        return True
    if raw in ("0", "false", "no", ""):
        return False
    raise ApiError(400, f"'{name}' must be true or false")


def states_param(request: web.Request) -> list[TaskState]:
    states: list[TaskState] = []
    for raw in request.query.getall("state", []):
        for name in raw.split(","):
            if not name:
                continue
            try:
                states.append(TaskState(name))
            except ValueError as exc:
                valid = ", ".join(s.value for s in TaskState)
                raise ApiError(400, f"unknown state {name!r}; one of {valid}") from exc
    return states


def encode_cursor(order: int) -> str:
    return base64.urlsafe_b64encode(f"o:{order}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> int:
    if not cursor:
        return 0
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if not text.startswith("o:"):
            raise ValueError(text)
        return int(text[2:])
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise ApiError(400, "'cursor' is not a cursor this server issued") from exc


def is_task_id(value: str) -> bool:
    return bool(_UUID.match(value))


async def visible_task(request: web.Request, who: Principal) -> Task:
    """The task named in the path, if this key may see it; 404 exactly as if absent."""
    task_id = request.match_info["task_id"]
    if not is_task_id(task_id):
        raise not_found()
    return await request.app[QUERIES].visible_task(who, task_id)
