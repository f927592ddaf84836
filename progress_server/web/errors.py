"""One error renderer: every failure becomes `{"error": {"type", "message"}}` (or a page).

The domain's refusals (progress_server/errors.py) are mapped to statuses here and nowhere
else, for API, page and WebSocket-upgrade callers alike. Bad input must never produce a 5xx
or a traceback, so aiohttp's own HTTP errors (unknown route, wrong method, body too large)
are translated here too.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from progress_server.errors import (
    Conflict,
    DomainError,
    IdempotencyConflict,
    Invalid,
    NotFound,
    ShuttingDown,
)

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_TYPES_BY_STATUS = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
    503: "unavailable",
}


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        error_type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type or _TYPES_BY_STATUS.get(status, "error")
        self.headers = headers or {}


def not_found(what: str = "task") -> ApiError:
    return ApiError(404, f"no such {what}")


def from_domain(error: DomainError) -> ApiError:
    """The HTTP answer to a refusal of the domain's."""
    if isinstance(error, ShuttingDown):
        # The OpenAPI document promises Retry-After on every 503.
        return ApiError(503, error.message, headers={"Retry-After": str(error.retry_after)})
    if isinstance(error, IdempotencyConflict):
        return ApiError(409, error.message, "idempotency_conflict")
    if isinstance(error, Conflict):
        return ApiError(409, error.message)
    if isinstance(error, NotFound):
        return ApiError(404, error.message)
    if isinstance(error, Invalid):
        return ApiError(422, error.message)
    return ApiError(400, error.message)


def error_payload(error_type: str, message: str) -> dict[str, dict[str, str]]:
    return {"error": {"type": error_type, "message": message}}


def render(request: web.Request, error: ApiError) -> web.Response:
    if _wants_html(request):
        # Styled like the status page, whose forms are what usually lead here.
        body = (
            "<!doctype html><html lang=en><meta charset=utf-8>"
            "<meta name=viewport content='width=device-width, initial-scale=1'>"
            "<meta name=color-scheme content='light dark'>"
            f"<title>{error.status} · progress-server</title>"
            "<link rel=stylesheet href=/static/app.css>"
            f"<main class='card error-page'><h1>{error.status}</h1>"
            f"<p>{_escape(error.message)}</p><p><a href='/'>Back to the downloads</a></p></main>"
        )
        return web.Response(
            status=error.status, text=body, content_type="text/html", headers=error.headers
        )
    return web.json_response(
        error_payload(error.error_type, error.message), status=error.status, headers=error.headers
    )


def _wants_html(request: web.Request) -> bool:
    if request.path.startswith("/api/") or request.path in ("/healthz", "/metrics"):
        return False
    return "text/html" in request.headers.get("Accept", "")


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


_AIOHTTP_MESSAGES = {
    404: "no such route",
    405: "method not allowed on this route",
    413: "request body too large",
}


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as error:
        return render(request, error)
    except DomainError as error:
        return render(request, from_domain(error))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {}
        if exc.status == 405 and "Allow" in exc.headers:
            headers["Allow"] = exc.headers["Allow"]
        message = _AIOHTTP_MESSAGES.get(exc.status) or exc.reason
        return render(request, ApiError(exc.status, message, headers=headers))
    except json.JSONDecodeError:
        return render(request, ApiError(400, "request body is not valid JSON"))
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return render(request, ApiError(500, "internal error", "internal_error"))
