"""The small pieces the OpenAPI document is assembled from: references, responses, parameters."""

from __future__ import annotations

from typing import Any

from progress_server.models import TaskState

JSON = dict[str, Any]
TASK_PATH = "/api/downloads/{task_id}"

_ERROR_STATUSES = {
    400: "Malformed input: a bad query parameter, JSON that does not parse.",
    401: "No API key, or a wrong or revoked one. Comes with `WWW-Authenticate: Bearer`.",
    403: "The key is valid but may not do this (not an admin key).",
    404: "No such task, or a task of another key: the two are indistinguishable.",
    409: "The task's state does not allow this action (`conflict`), or an Idempotency-Key "
    "was reused with a different request (`idempotency_conflict`).",
    413: "The request body is larger than the server accepts.",
    415: "The body is not `application/json`.",
    416: "The requested byte range lies outside the file.",
    422: "The JSON is well formed but a field is missing, of the wrong type or not allowed.",
    429: "Too many failed logins from this address; `Retry-After` says how long to wait.",
    503: "The server is shutting down and accepts no new work; `Retry-After` says when to retry.",
}


def ref(name: str) -> JSON:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema_type: str, **extra: Any) -> JSON:
    return {"type": [schema_type, "null"], **extra}


def extra(schema: JSON, description: str) -> JSON:
    """A field the guide lacks."""
    return {**schema, "description": f"*extra*: {description}", "x-extra": True}


def json_content(schema: JSON) -> JSON:
    return {"application/json": {"schema": schema}}


def error_response(status: int) -> JSON:
    response: JSON = {"description": _ERROR_STATUSES[status], "content": json_content(ref("Error"))}
    if status == 401:
        response["headers"] = {"WWW-Authenticate": {"schema": {"type": "string"}}}
    if status in (429, 503):
        response["headers"] = {"Retry-After": {"schema": {"type": "string"}}}
    return response


def responses(ok: dict[int, JSON], *errors: int, api: bool = True) -> JSON:
    # Every /api route can answer 401 (no or wrong key) and 429 (too many failed logins).
    statuses = sorted({*errors, *((401, 429) if api else ())})
    return {
        **{str(code): body for code, body in ok.items()},
        **{str(code): error_response(code) for code in statuses},
    }


def ok(description: str, schema: JSON, headers: JSON | None = None) -> JSON:
    response: JSON = {"description": description, "content": json_content(schema)}
    if headers:
        response["headers"] = headers
    return response


def query(name: str, schema: JSON, description: str, **more: Any) -> JSON:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
        **more,
    }


def integer(minimum: int, maximum: int) -> JSON:
    return {"type": "integer", "minimum": minimum, "maximum": maximum}


def _any_case(word: str) -> str:
    # JSON Schema patterns (ECMA-262) have no case-insensitive flag.
    return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else c for c in word)


TASK_ID = {
    "name": "task_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": "The task's UUID.",
}
_STATE_NAMES = "|".join(s.value for s in TaskState)
STATE_LIST = {"type": "string", "pattern": f"^(?:{_STATE_NAMES})?(?:,(?:{_STATE_NAMES})?)*$"}
BOOLEAN = {
    "type": "string",
    "pattern": "^(?:"
    + "|".join(["1", "0", *map(_any_case, ("true", "false", "yes", "no"))])
    + ")?$",
}
AFTER_SEQ = query("after_seq", integer(0, 2**62), "Only events with a larger `seq`.")
EVENT_LIMIT = query("limit", integer(1, 5000), "At most this many events.")
IF_NONE_MATCH = {"name": "If-None-Match", "in": "header", "schema": {"type": "string"}}
ETAG = {"ETag": {"schema": {"type": "string"}, "description": "Changes when the body changes."}}
NOT_MODIFIED = {
    "description": "`If-None-Match` named the current ETag: nothing changed.",
    "headers": ETAG,
}
LOCATION = {"Location": {"schema": {"type": "string"}, "description": "`/api/downloads/{id}`"}}
