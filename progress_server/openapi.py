"""The OpenAPI 3.1 document of the whole HTTP surface, built by plain functions.

`tests/test_openapi.py` keeps it true: every route of the app must be documented and every
documented route must exist. Fields the guide lacks are marked `x-extra: true`.
"""

from __future__ import annotations

from typing import Any

from progress_server import __version__
from progress_server.models import ErrorType, EventName, TaskState
from progress_server.processing.presets import PRESETS

JSON = dict[str, Any]
TASK_PATH = "/api/downloads/{task_id}"

_ERROR_STATUSES = {
    400: "Malformed input: a bad query parameter, JSON that does not parse.",
    401: "No API key, or a wrong or revoked one. Comes with `WWW-Authenticate: Bearer`.",
    403: "The key is valid but may not do this (not an admin key).",
    404: "No such task, or a task of another key: the two are indistinguishable.",
    409: "The task's state does not allow this action.",
    413: "The request body is larger than the server accepts.",
    415: "The body is not `application/json`.",
    416: "The requested byte range lies outside the file.",
    422: "The JSON is well formed but a field is missing, of the wrong type or not allowed.",
    429: "Too many failed logins from this address; `Retry-After` says how long to wait.",
    503: "The server is shutting down and accepts no new work; `Retry-After` says when to retry.",
}


def _ref(name: str) -> JSON:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema_type: str, **extra: Any) -> JSON:
    return {"type": [schema_type, "null"], **extra}


def _extra(schema: JSON, description: str) -> JSON:
    return {**schema, "description": f"*extra*: {description}", "x-extra": True}


def _json(schema: JSON) -> JSON:
    return {"application/json": {"schema": schema}}


def _error(status: int) -> JSON:
    response: JSON = {"description": _ERROR_STATUSES[status], "content": _json(_ref("Error"))}
    if status == 401:
        response["headers"] = {"WWW-Authenticate": {"schema": {"type": "string"}}}
    if status in (429, 503):
        response["headers"] = {"Retry-After": {"schema": {"type": "string"}}}
    return response


def _responses(ok: dict[int, JSON], *errors: int, api: bool = True) -> JSON:
    # Every /api route can answer 401 (no or wrong key) and 429 (too many failed logins).
    statuses = sorted({*errors, *((401, 429) if api else ())})
    return {
        **{str(code): body for code, body in ok.items()},
        **{str(code): _error(code) for code in statuses},
    }


def _ok(description: str, schema: JSON, headers: JSON | None = None) -> JSON:
    response: JSON = {"description": description, "content": _json(schema)}
    if headers:
        response["headers"] = headers
    return response


def _query(name: str, schema: JSON, description: str, **extra: Any) -> JSON:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
        **extra,
    }


_TASK_ID = {
    "name": "task_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": "The task's UUID.",
}


def _integer(minimum: int, maximum: int) -> JSON:
    return {"type": "integer", "minimum": minimum, "maximum": maximum}


def _any_case(word: str) -> str:
    # JSON Schema patterns (ECMA-262) have no case-insensitive flag.
    return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else c for c in word)


_STATE_NAMES = "|".join(s.value for s in TaskState)
_STATE_LIST = {"type": "string", "pattern": f"^(?:{_STATE_NAMES})?(?:,(?:{_STATE_NAMES})?)*$"}
_BOOLEAN = {
    "type": "string",
    "pattern": "^(?:"
    + "|".join(["1", "0", *map(_any_case, ("true", "false", "yes", "no"))])
    + ")?$",
}
_AFTER_SEQ = _query("after_seq", _integer(0, 2**62), "Only events with a larger `seq`.")
_EVENT_LIMIT = _query("limit", _integer(1, 5000), "At most this many events.")
_ETAG = {"ETag": {"schema": {"type": "string"}, "description": "Changes when the body changes."}}
_NOT_MODIFIED = {
    "description": "`If-None-Match` named the current ETag: nothing changed.",
    "headers": _ETAG,
}
_LOCATION = {"Location": {"schema": {"type": "string"}, "description": "`/api/downloads/{id}`"}}


# -- schemas -----------------------------------------------------------------------------


def _schemas() -> JSON:
    states = [s.value for s in TaskState]
    return {
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["type", "message"],
                    "properties": {"type": {"type": "string"}, "message": {"type": "string"}},
                }
            },
        },
        "TaskState": {
            "type": "string",
            "enum": states,
            "description": "The guide's states; `paused` is *extra*.",
        },
        "PollingProgress": {
            "type": "object",
            "additionalProperties": False,
            "required": [
                "percentage",
                "downloaded_bytes",
                "total_bytes",
                "speed_mbps",
                "eta_seconds",
            ],
            "properties": {
                "percentage": _nullable("number", minimum=0, maximum=100),
                "downloaded_bytes": {"type": "integer", "minimum": 0},
                "total_bytes": _nullable("integer", minimum=0),
                "speed_mbps": {"type": "number", "minimum": 0, "description": "10^6 bytes/s"},
                "eta_seconds": _nullable("integer", minimum=0),
            },
        },
        "Polling": {
            "type": "object",
            "additionalProperties": False,
            "required": ["task_id", "state", "progress", "timestamp"],
            "properties": {
                "task_id": {"type": "string", "format": "uuid"},
                "state": _ref("TaskState"),
                "progress": _ref("PollingProgress"),
                "timestamp": {"type": "string", "format": "date-time"},
            },
        },
        "PollingBatch": _extra(
            {
                "type": "object",
                "required": ["tasks"],
                "properties": {"tasks": {"type": "array", "items": _ref("Polling")}},
            },
            "one polling response per visible task named; unknown ids are left out.",
        ),
        "TaskError": {
            "type": "object",
            "required": ["type", "message"],
            "properties": {
                "type": {"type": "string", "enum": [e.value for e in ErrorType]},
                "message": {"type": "string"},
                "retryable": _extra({"type": "boolean"}, "whether the server will retry."),
                "status": _extra({"type": "integer"}, "the origin's HTTP status."),
            },
        },
        "Result": {
            "type": "object",
            "required": ["filename", "size_mb", "duration_seconds"],
            "properties": {
                "filename": {"type": "string"},
                "size_mb": {"type": "number", "description": "bytes / 2^20, two decimals"},
                "duration_seconds": _nullable("number"),
            },
        },
        "Task": {
            "type": "object",
            "required": [
                "task_id",
                "url",
                "filename",
                "state",
                "progress",
                "result",
                "error",
                "created_at",
                "updated_at",
            ],
            "properties": {
                "task_id": {"type": "string", "format": "uuid"},
                "url": {"type": "string"},
                "filename": _nullable("string"),
                "state": _ref("TaskState"),
                "progress": _ref("PollingProgress"),
                "result": {"oneOf": [_ref("Result"), {"type": "null"}]},
                "error": {"oneOf": [_ref("TaskError"), {"type": "null"}]},
                "created_at": {"type": "string", "format": "date-time"},
                "updated_at": {"type": "string", "format": "date-time"},
                "sha256": _extra({"type": "string"}, "the checksum the file must have."),
                "options": _extra({"type": "object"}, "per-task options given at submission."),
            },
        },
        "TaskList": {
            "type": "object",
            "required": ["tasks", "next_cursor"],
            "properties": {
                "tasks": {"type": "array", "items": _ref("Task")},
                "next_cursor": _nullable("string"),
            },
        },
        "NewDownload": {
            "type": "object",
            "required": ["url"],
            "additionalProperties": False,
            "properties": {
                "url": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": 8192,
                    "pattern": "^[hH][tT][tT][pP][sS]?://[^\\s]+$",
                    "description": "An http:// or https:// URL.",
                },
                # Optional fields take null as "not given", as the parser does.
                "filename": {
                    "type": ["string", "null"],
                    "minLength": 1,
                    "description": "A plain name: no `/`, `\\`, `..`, NUL, leading dot, "
                    "nor over 255 bytes (else 422).",
                },
                "sha256": {"type": ["string", "null"], "pattern": "^[0-9a-fA-F]{64}$"},
                "max_speed_mbps": _extra(
                    {"type": ["number", "null"], "exclusiveMinimum": 0, "maximum": 1e6},
                    "a speed limit for this task, in 10^6 bytes/s.",
                ),
                "segments": _extra(
                    {"type": ["integer", "null"], "minimum": 1, "maximum": 16},
                    "ranged connections this download may use at once (default: the "
                    "server's --segments).",
                ),
                "post_process": _extra(
                    {
                        "type": ["object", "null"],
                        "additionalProperties": False,
                        "properties": {
                            "transcode": {
                                "type": ["string", "null"],
                                "enum": [*sorted(PRESETS), None],
                                "description": "a transcode preset (422 without ffmpeg).",
                            }
                        },
                    },
                    "processing steps for this task.",
                ),
            },
        },
        "Event": {
            "type": "object",
            "required": ["event", "task_id", "timestamp", "seq", "state"],
            "properties": {
                "event": {"type": "string", "enum": [e.value for e in EventName]},
                "task_id": {"type": "string", "format": "uuid"},
                "timestamp": {"type": "string", "format": "date-time"},
                "seq": _extra({"type": "integer", "minimum": 1}, "server-wide, increasing."),
                "state": _extra(_ref("TaskState"), "the task's state after the event."),
                "progress": {"type": "object", "description": "`download.progress`"},
                "result": {"type": "object", "description": "`download.completed`"},
                "error": {"type": "object", "description": "`download.error`"},
            },
        },
        "EventList": {
            "type": "object",
            "required": ["events"],
            "properties": {"events": {"type": "array", "items": _ref("Event")}},
        },
        "Health": {
            "type": "object",
            "required": ["status"],
            "properties": {"status": {"type": "string"}, "version": {"type": "string"}},
        },
    }


# -- paths -------------------------------------------------------------------------------


def _task_action(action: str, summary: str, *errors: int) -> JSON:
    return {
        "post": {
            "operationId": f"{action}Download",
            "summary": summary,
            "parameters": [_TASK_ID],
            "responses": _responses({200: _ok("The task afterwards.", _ref("Task"))}, 404, *errors),
        }
    }


def _download_paths() -> JSON:
    return {
        "/api/downloads": {
            "post": {
                "operationId": "createDownload",
                "summary": "Submit a download.",
                "parameters": [
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string", "minLength": 1, "maxLength": 200},
                        "description": "The same key within 24 h returns the first task (200).",
                    }
                ],
                "requestBody": {"required": True, "content": _json(_ref("NewDownload"))},
                "responses": _responses(
                    {
                        201: _ok("Created.", _ref("Task"), _LOCATION),
                        200: _ok(
                            "The task this Idempotency-Key made before.", _ref("Task"), _LOCATION
                        ),
                    },
                    400,
                    413,
                    415,
                    422,
                    503,
                ),
            },
            "get": {
                "operationId": "listDownloads",
                "summary": "The key's tasks (all tasks for an admin key), oldest first.",
                "parameters": [
                    _query(
                        "state",
                        {"type": "array", "items": _STATE_LIST},
                        "Only these states (see TaskState); repeat or separate with commas.",
                        style="form",
                        explode=True,
                    ),
                    _query("limit", _integer(1, 500), "Page size."),
                    _query("cursor", {"type": "string"}, "`next_cursor` of the previous page."),
                ],
                "responses": _responses({200: _ok("A page of tasks.", _ref("TaskList"))}, 400),
            },
        },
        TASK_PATH: {
            "get": {
                "operationId": "getDownload",
                "summary": "One task's record.",
                "parameters": [_TASK_ID],
                "responses": _responses({200: _ok("The record.", _ref("Task"))}, 404),
            },
            "delete": {
                "operationId": "deleteDownload",
                "summary": "Stop and forget a task.",
                "parameters": [
                    _TASK_ID,
                    _query(
                        "delete_file", _BOOLEAN, "Also remove the file (true/false, yes/no, 1/0)."
                    ),
                ],
                "responses": _responses({204: {"description": "Deleted."}}, 400, 404),
            },
        },
        TASK_PATH + "/cancel": _task_action("cancel", "Cancel (409 once completed).", 409),
        TASK_PATH + "/retry": _task_action(
            "retry", "Requeue a failed or cancelled task; it resumes where it can.", 409, 503
        ),
        TASK_PATH + "/pause": _task_action("pause", "*extra*: pause, keeping the part.", 409),
        TASK_PATH + "/resume": _task_action("resume", "*extra*: resume a paused task.", 409, 503),
        TASK_PATH + "/file": {
            "get": {
                "operationId": "downloadFile",
                "summary": "The finished file, with Range support.",
                "parameters": [_TASK_ID],
                "responses": _responses(
                    {
                        200: {
                            "description": "The file.",
                            "content": {"application/octet-stream": {"schema": {}}},
                        },
                        206: {
                            "description": "The requested range.",
                            "content": {"application/octet-stream": {"schema": {}}},
                        },
                    },
                    404,
                    409,
                    416,
                ),
            }
        },
        TASK_PATH + "/events": {
            "get": {
                "operationId": "taskEvents",
                "summary": "The task's persisted events in `seq` order.",
                "parameters": [_TASK_ID, _AFTER_SEQ, _EVENT_LIMIT],
                "responses": _responses({200: _ok("Events.", _ref("EventList"))}, 400, 404),
            }
        },
    }


def _progress_paths() -> JSON:
    return {
        "/api/progress": {
            "get": {
                "operationId": "pollProgressBatch",
                "summary": "*extra*: poll several tasks at once.",
                "parameters": [
                    {
                        "name": "task_id",
                        "in": "query",
                        "required": True,
                        "schema": {
                            "type": "array",
                            "items": {"type": "string", "format": "uuid"},
                            "minItems": 1,
                            "maxItems": 200,
                        },
                        "style": "form",
                        "explode": True,
                    },
                    {"name": "If-None-Match", "in": "header", "schema": {"type": "string"}},
                ],
                "responses": _responses(
                    {200: _ok("Progress.", _ref("PollingBatch"), _ETAG), 304: _NOT_MODIFIED}, 400
                ),
            }
        },
        "/api/progress/{task_id}": {
            "get": {
                "operationId": "pollProgress",
                "summary": "The guide's polling response, with an ETag.",
                "parameters": [
                    _TASK_ID,
                    {"name": "If-None-Match", "in": "header", "schema": {"type": "string"}},
                ],
                "responses": _responses(
                    {200: _ok("Progress.", _ref("Polling"), _ETAG), 304: _NOT_MODIFIED}, 404
                ),
            }
        },
        "/api/events": {
            "get": {
                "operationId": "allEvents",
                "summary": "Every persisted event the key may see, in `seq` order.",
                "parameters": [_AFTER_SEQ, _EVENT_LIMIT],
                "responses": _responses({200: _ok("Events.", _ref("EventList"))}, 400),
            }
        },
    }


def _websocket_paths() -> JSON:
    return {
        "/api/progress/ws": {
            "get": {
                "operationId": "progressWebSocket",
                "summary": "The WebSocket: subscribe, unsubscribe, ping, configure (see the "
                "contract). Auth: the Bearer header, a first `auth` frame, or the page cookie.",
                "security": [{"bearerAuth": []}, {}],
                "responses": {
                    "101": {"description": "Switching to the WebSocket protocol."},
                    **_responses({}, 400, 403),
                },
            }
        },
    }


def _operations_paths() -> JSON:
    text = {"text/plain": {"schema": {"type": "string"}}}
    return {
        "/healthz": {
            "get": {
                "operationId": "health",
                "summary": "200 once the server accepts tasks; no key needed.",
                "security": [],
                "responses": {
                    "200": _ok("Accepting tasks.", _ref("Health")),
                    "503": _ok("Shutting down.", _ref("Health")),
                },
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "summary": "Prometheus text format. Needs an admin key, except from a loopback "
                "address when the server runs with `--metrics-loopback`.",
                "responses": _responses({200: {"description": "Metrics.", "content": text}}, 403),
            }
        },
        "/api/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This document.",
                "responses": _responses({200: _ok("OpenAPI 3.1.", {"type": "object"})}),
            }
        },
    }


def _page_error(status: int, description: str) -> JSON:
    # The page's errors: an HTML page for a browser, the JSON error body otherwise.
    html = {"text/html": {"schema": {"type": "string"}}}
    return {"description": description, "content": {**html, **_json(_ref("Error"))}}


def _form_post(operation_id: str, summary: str, fields: JSON, *errors: int) -> JSON:
    described = {
        401: "No or an ended session (for /login: a wrong key).",
        403: "Posted from another site, or a stale CSRF token.",
        404: "No such task for this session's key.",
        409: "The task's state does not allow the action.",
        413: "The form is larger than the server accepts.",
        422: "The URL or filename in the form is not acceptable.",
        429: "Too many failed logins from this address.",
        503: "The server is shutting down.",
    }
    return {
        "post": {
            "operationId": operation_id,
            "summary": summary,
            "tags": ["page"],
            "security": [],
            "requestBody": {
                "content": {
                    "application/x-www-form-urlencoded": {
                        "schema": {"type": "object", "properties": fields}
                    }
                }
            },
            "responses": {
                "303": {
                    "description": "Done: back to the page.",
                    "headers": {"Location": {"schema": {"type": "string"}}},
                },
                **{str(code): _page_error(code, described[code]) for code in sorted(errors)},
            },
        }
    }


def _page_paths() -> JSON:
    """The status page: server-rendered HTML, an HttpOnly session cookie, CSRF-checked forms."""
    text = {"type": "string"}
    csrf = {"csrf_token": {**text, "description": "The token the page embeds in its forms."}}
    task_id = {**_TASK_ID, "schema": {"type": "string"}}
    return {
        "/": {
            "get": {
                "operationId": "page",
                "summary": "The login form without a session, the task table with one.",
                "tags": ["page"],
                "security": [],
                "responses": {"200": {"description": "HTML.", "content": {"text/html": {}}}},
            }
        },
        "/login": _form_post(
            "pageLogin",
            "Exchange an API key for a session cookie (HttpOnly, SameSite=Strict).",
            {"api_key": text},
            401,
            403,
            413,
            429,
        ),
        "/logout": _form_post("pageLogout", "End the session.", csrf, 403, 413),
        "/tasks": _form_post(
            "pageAddDownload",
            "Add a download from the page's form.",
            {"url": text, "filename": text, "preset": text, **csrf},
            401,
            403,
            413,
            422,
            503,
        ),
        "/tasks/{task_id}/{action}": {
            **_form_post("pageTaskAction", "A task button.", csrf, 401, 403, 404, 409, 413, 503),
            "parameters": [
                task_id,
                {
                    "name": "action",
                    "in": "path",
                    "required": True,
                    "schema": {
                        "type": "string",
                        "enum": ["pause", "resume", "cancel", "retry", "delete"],
                    },
                },
            ],
        },
        "/static/{filename}": {
            "get": {
                "operationId": "staticFile",
                "summary": "The page's script and style sheet.",
                "tags": ["page"],
                "security": [],
                "parameters": [
                    {"name": "filename", "in": "path", "required": True, "schema": text}
                ],
                "responses": {
                    "200": {"description": "The file."},
                    "404": _page_error(404, "No such file."),
                },
            }
        },
    }


def build_document() -> JSON:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "progress-server",
            "version": __version__,
            "description": "A self-hosted download server with live progress. Error bodies "
            'are always `{"error": {"type", "message"}}`. Fields marked `x-extra` are '
            "additions to the progress tracking guide's shapes.",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearerAuth": []}],
        "paths": {
            **_operations_paths(),
            **_download_paths(),
            **_progress_paths(),
            **_websocket_paths(),
            **_page_paths(),
        },
        "components": {
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key from `progress-server keys create`.",
                }
            },
            "schemas": _schemas(),
        },
    }
