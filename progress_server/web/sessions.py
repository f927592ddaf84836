"""Sessions on the web: the HttpOnly, SameSite=Strict cookie that carries a session's token,
and the origin checks a cookie-authenticated request must pass.

The sessions themselves (create, look up, end) live in progress_server/sessions.py. Every form
post and every cookie-authenticated state-changing API call must carry the session's CSRF
token.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from aiohttp import web

from progress_server.appkeys import SESSIONS
from progress_server.sessions import LIFETIME, Session
from progress_server.web.errors import Handler

COOKIE = "progress_session"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"


@web.middleware
async def session_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """In a cluster, bring the cookie's session over from the database if another node made
    it, so the handlers' look-ups (which do not wait) find it."""
    await request.app[SESSIONS].find(request.cookies.get(COOKIE))
    return await handler(request)


def request_session(request: web.Request) -> Session | None:
    """The live session whose token the request's cookie carries, if any."""
    return request.app[SESSIONS].get(request.cookies.get(COOKIE))


def set_cookie(request: web.Request, response: web.StreamResponse, token: str) -> None:
    response.set_cookie(
        COOKIE,
        token,
        max_age=int(LIFETIME),
        path="/",
        httponly=True,
        samesite="Strict",
        secure=is_https(request),
    )


def clear_cookie(response: web.StreamResponse) -> None:
    response.del_cookie(COOKIE, path="/", samesite="Strict")


def is_https(request: web.Request) -> bool:
    # Behind a TLS-terminating proxy the request arrives as plain HTTP; the proxy's header
    # only decides whether the cookie gets the Secure flag, so trusting it risks nothing.
    return request.secure or request.headers.get("X-Forwarded-Proto", "").lower() == "https"


def same_origin(request: web.Request) -> bool:
    """True when the request's Origin names the host it was sent to.

    Browsers send `Origin` on every WebSocket upgrade and cross-site POST; a page on another
    site cannot forge it. A reverse proxy must pass the original `Host` through.
    """
    origin = request.headers.get("Origin")
    if not origin or origin == "null":
        return False
    try:
        netloc = urlsplit(origin).netloc
    except ValueError:
        return False
    return bool(netloc) and netloc.lower() == request.host.lower()
