"""Authentication middleware: Bearer keys on every `/api/...` route."""

from __future__ import annotations

from aiohttp import web

from progress_server.appkeys import KEYRING, LOGIN_LIMITER
from progress_server.auth import Principal, bearer_token
from progress_server.web.errors import ApiError, Handler

PRINCIPAL = "principal"
# The WebSocket may also authenticate with its first frame, so it passes unauthenticated.
_FRAME_AUTH_PATHS = frozenset({"/api/progress/ws"})


def principal(request: web.Request) -> Principal:
    found = request.get(PRINCIPAL)
    if not isinstance(found, Principal):
        raise ApiError(401, "an API key is required", headers={"WWW-Authenticate": "Bearer"})
    return found


def client_address(request: web.Request) -> str:
    return request.remote or "unknown"


async def authenticate_request(request: web.Request) -> Principal | None:
    """The key's principal, None when no key was sent; raises on a wrong key."""
    token = bearer_token(request.headers.get("Authorization"))
    if token is None:
        return None
    limiter = request.app[LOGIN_LIMITER]
    address = client_address(request)
    wait = limiter.retry_after(address)
    if wait > 0:
        raise ApiError(
            429,
            f"too many failed logins from this address; try again in {int(wait) + 1} s",
            headers={"Retry-After": str(int(wait) + 1)},
        )
    found = await request.app[KEYRING].authenticate(token)
    if found is None:
        limiter.record_failure(address)
        raise ApiError(401, "invalid or revoked API key", headers={"WWW-Authenticate": "Bearer"})
    return found


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path.startswith("/api/"):
        found = await authenticate_request(request)
        if found is not None:
            request[PRINCIPAL] = found
        elif request.path not in _FRAME_AUTH_PATHS:
            raise ApiError(401, "an API key is required", headers={"WWW-Authenticate": "Bearer"})
    return await handler(request)
