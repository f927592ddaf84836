"""Authentication middleware: Bearer keys on every `/api/...` route, or the page's session.

A session cookie authenticates API calls made by the status page's own JavaScript. Because a
browser attaches cookies by itself, cookie-authenticated requests get two extra checks: a
state-changing call must carry the session's CSRF token in `X-CSRF-Token`, and a WebSocket
upgrade must come from a page of this very host (`Origin` matches `Host`).
"""

from __future__ import annotations

from aiohttp import web

from progress_server.appkeys import KEYRING, LOGIN_LIMITER
from progress_server.auth import Principal, bearer_token
from progress_server.web.errors import ApiError, Handler
from progress_server.web.sessions import CSRF_HEADER, request_session, same_origin

# Typed request state, as AppKeys are for the app (web.RequestKey: aiohttp 3.14).
PRINCIPAL = web.RequestKey("principal", Principal)
# The WebSocket may also authenticate with its first frame, so it passes unauthenticated.
_FRAME_AUTH_PATHS = frozenset({"/api/progress/ws"})
# The API's description and its viewer hold no data: generators and browsers read them
# without a key.
_PUBLIC_PATHS = frozenset({"/api/openapi.json", "/api/docs"})
_PUBLIC_PREFIX = "/api/docs/"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def principal(request: web.Request) -> Principal:
    try:
        return request[PRINCIPAL]
    except KeyError:
        raise ApiError(
            401, "an API key is required", headers={"WWW-Authenticate": "Bearer"}
        ) from None


def client_address(request: web.Request) -> str:
    return request.remote or "unknown"


async def authenticate_request(request: web.Request) -> Principal | None:
    """The key's (or the page session's) principal, None when neither was sent.

    Raises on a wrong key, and on a session cookie used without its CSRF token or, for a
    WebSocket upgrade, from a foreign Origin.
    """
    token = bearer_token(request.headers.get("Authorization"))
    if token is None:
        # A session names a key: one revoked a moment ago must not pass either.
        await request.app[KEYRING].current()
        return session_principal(request)
    found = await request.app[KEYRING].authenticate(token)
    if found is not None:
        # A valid key is never slowed down, even from an address that has been guessing
        # (a shared NAT, or a misconfigured client beside a working one).
        return found
    limiter = request.app[LOGIN_LIMITER]
    address = client_address(request)
    wait = limiter.retry_after(address)
    if wait > 0:
        raise ApiError(
            429,
            f"too many failed logins from this address; try again in {int(wait) + 1} s",
            headers={"Retry-After": str(int(wait) + 1)},
        )
    limiter.record_failure(address)
    raise ApiError(401, "invalid or revoked API key", headers={"WWW-Authenticate": "Bearer"})


def session_principal(request: web.Request) -> Principal | None:
    session = request_session(request)
    if session is None:
        return None
    found = request.app[KEYRING].principal_by_id(session.key_id)
    if found is None:
        return None
    if request.headers.get("Upgrade", "").lower() == "websocket":
        if not same_origin(request):
            raise ApiError(403, "a WebSocket authenticated by cookie must come from this site")
    elif request.method not in _SAFE_METHODS:
        if not session.csrf_matches(request.headers.get(CSRF_HEADER)):
            raise ApiError(403, f"a cookie-authenticated {request.method} needs {CSRF_HEADER}")
    return found


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    public = request.path in _PUBLIC_PATHS or request.path.startswith(_PUBLIC_PREFIX)
    if request.path.startswith("/api/") and not public:
        found = await authenticate_request(request)
        if found is not None:
            request[PRINCIPAL] = found
        elif request.path not in _FRAME_AUTH_PATHS:
            raise ApiError(401, "an API key is required", headers={"WWW-Authenticate": "Bearer"})
    return await handler(request)
