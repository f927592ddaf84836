"""The OpenAPI paths of the JSON API and of operations: downloads, progress, events,
the WebSocket, health, metrics and the document itself."""

from __future__ import annotations

from progress_server.openapi.blocks import (
    AFTER_SEQ,
    BOOLEAN,
    ETAG,
    EVENT_LIMIT,
    IF_NONE_MATCH,
    JSON,
    LOCATION,
    NOT_MODIFIED,
    STATE_LIST,
    TASK_ID,
    TASK_PATH,
    integer,
    json_content,
    ok,
    query,
    ref,
    responses,
)


def _task_action(action: str, summary: str, *errors: int) -> JSON:
    return {
        "post": {
            "operationId": f"{action}Download",
            "summary": summary,
            "parameters": [TASK_ID],
            "responses": responses({200: ok("The task afterwards.", ref("Task"))}, 404, *errors),
        }
    }


def download_paths() -> JSON:
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
                        "description": "The same key within 24 h with the same request "
                        "(compared in canonical form: key order, spacing and nulls do not "
                        "matter) returns the first task (200); with a different request it "
                        "answers 409 `idempotency_conflict`.",
                    }
                ],
                "requestBody": {"required": True, "content": json_content(ref("NewDownload"))},
                "responses": responses(
                    {
                        201: ok("Created.", ref("Task"), LOCATION),
                        200: ok(
                            "The task this Idempotency-Key made before.", ref("Task"), LOCATION
                        ),
                    },
                    400,
                    409,
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
                    query(
                        "state",
                        {"type": "array", "items": STATE_LIST},
                        "Only these states (see TaskState); repeat or separate with commas.",
                        style="form",
                        explode=True,
                    ),
                    query("limit", integer(1, 500), "Page size."),
                    query("cursor", {"type": "string"}, "`next_cursor` of the previous page."),
                ],
                "responses": responses({200: ok("A page of tasks.", ref("TaskList"))}, 400),
            },
        },
        TASK_PATH: {
            "get": {
                "operationId": "getDownload",
                "summary": "One task's record.",
                "parameters": [TASK_ID],
                "responses": responses({200: ok("The record.", ref("Task"))}, 404),
            },
            "delete": {
                "operationId": "deleteDownload",
                "summary": "Stop and forget a task.",
                "parameters": [
                    TASK_ID,
                    query(
                        "delete_file", BOOLEAN, "Also remove the file (true/false, yes/no, 1/0)."
                    ),
                ],
                "responses": responses({204: {"description": "Deleted."}}, 400, 404),
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
                "parameters": [TASK_ID],
                "responses": responses(
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
                "parameters": [TASK_ID, AFTER_SEQ, EVENT_LIMIT],
                "responses": responses({200: ok("Events.", ref("EventList"))}, 400, 404),
            }
        },
    }


def _poll(operation_id: str, summary: str, selector: JSON, schema: str, error: int) -> JSON:
    """A polling GET: answers 304 when `If-None-Match` names the current ETag."""
    return {
        "get": {
            "operationId": operation_id,
            "summary": summary,
            "parameters": [selector, IF_NONE_MATCH],
            "responses": responses(
                {200: ok("Progress.", ref(schema), ETAG), 304: NOT_MODIFIED}, error
            ),
        }
    }


_TASK_IDS = {
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
}


def progress_paths() -> JSON:
    return {
        "/api/progress": _poll(
            "pollProgressBatch",
            "*extra*: poll several tasks at once.",
            _TASK_IDS,
            "PollingBatch",
            400,
        ),
        "/api/progress/{task_id}": _poll(
            "pollProgress", "The guide's polling response, with an ETag.", TASK_ID, "Polling", 404
        ),
        "/api/events": {
            "get": {
                "operationId": "allEvents",
                "summary": "Every persisted event the key may see, in `seq` order.",
                "parameters": [AFTER_SEQ, EVENT_LIMIT],
                "responses": responses({200: ok("Events.", ref("EventList"))}, 400),
            }
        },
    }


def websocket_paths() -> JSON:
    return {
        "/api/progress/ws": {
            "get": {
                "operationId": "progressWebSocket",
                "summary": "The WebSocket: subscribe, unsubscribe, ping, configure (see the "
                "contract). Auth: the Bearer header, a first `auth` frame, or the page cookie.",
                "security": [{"bearerAuth": []}, {}],
                "responses": {
                    "101": {"description": "Switching to the WebSocket protocol."},
                    **responses({}, 400, 403),
                },
            }
        },
    }


def operations_paths() -> JSON:
    text = {"text/plain": {"schema": {"type": "string"}}}
    html = {"text/html": {"schema": {"type": "string"}}}
    return {
        "/healthz": {
            "get": {
                "operationId": "health",
                "summary": "200 once the server accepts tasks; no key needed. In cluster "
                "mode it names the node and answers 503 while the database is unreachable "
                "(the node claims no work then).",
                "security": [],
                "responses": {
                    "200": ok("Accepting tasks.", ref("Health")),
                    "503": ok(
                        "Shutting down, or (cluster) the database is unreachable.", ref("Health")
                    ),
                },
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "summary": "Prometheus text format. Needs an admin key, except from a loopback "
                "address when the server runs with `--metrics-loopback`.",
                "responses": responses({200: {"description": "Metrics.", "content": text}}, 403),
            }
        },
        "/api/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This document; no key needed (it holds no data).",
                "security": [],
                "responses": responses({200: ok("OpenAPI 3.1.", {"type": "object"})}, api=False),
            }
        },
        "/api/docs": {
            "get": {
                "operationId": "apiDocs",
                "summary": "An interactive viewer of this document (Swagger UI, served from "
                "the package: no CDN); no key needed.",
                "security": [],
                "responses": {"200": {"description": "The viewer.", "content": html}},
            }
        },
        "/api/docs/{asset}": {
            "get": {
                "operationId": "apiDocsAsset",
                "summary": "The viewer's script and style sheet; no key needed.",
                "security": [],
                "parameters": [
                    {
                        "name": "asset",
                        "in": "path",
                        "required": True,
                        "schema": {
                            "type": "string",
                            "enum": ["swagger-ui-bundle.js", "swagger-ui.css"],
                        },
                    }
                ],
                "responses": responses(
                    {200: {"description": "The file.", "content": {"*/*": {"schema": {}}}}},
                    404,
                    api=False,
                ),
            }
        },
    }
