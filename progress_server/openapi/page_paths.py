"""The OpenAPI paths of the status page: server-rendered HTML, a session cookie and
CSRF-checked forms."""

from __future__ import annotations

from progress_server.openapi.blocks import JSON, TASK_ID, json_content, ref


def _page_error(status: int, description: str) -> JSON:
    # The page's errors: an HTML page for a browser, the JSON error body otherwise.
    html = {"text/html": {"schema": {"type": "string"}}}
    return {"description": description, "content": {**html, **json_content(ref("Error"))}}


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


def page_paths() -> JSON:
    """The status page: server-rendered HTML, an HttpOnly session cookie, CSRF-checked forms."""
    text = {"type": "string"}
    csrf = {"csrf_token": {**text, "description": "The token the page embeds in its forms."}}
    task_id = {**TASK_ID, "schema": {"type": "string"}}
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
