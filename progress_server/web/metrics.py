"""`GET /metrics`: Prometheus text. An admin key, or loopback with `--metrics-loopback`."""

from __future__ import annotations

import ipaddress

from aiohttp import web

from progress_server.appkeys import METRICS, SETTINGS
from progress_server.metrics import CONTENT_TYPE
from progress_server.web.auth import authenticate_request
from progress_server.web.errors import ApiError

# A request relayed by a reverse proxy arrives from loopback on behalf of someone else.
_PROXY_HEADERS = ("Forwarded", "X-Forwarded-For", "X-Real-IP")


def _from_loopback(request: web.Request) -> bool:
    if any(header in request.headers for header in _PROXY_HEADERS):
        return False
    try:
        return ipaddress.ip_address((request.remote or "").split("%", 1)[0]).is_loopback
    except ValueError:
        return False


async def metrics(request: web.Request) -> web.Response:
    if not (request.app[SETTINGS].metrics_loopback and _from_loopback(request)):
        who = await authenticate_request(request)
        if who is None:
            raise ApiError(
                401, "an admin API key is required", headers={"WWW-Authenticate": "Bearer"}
            )
        if not who.is_admin:
            raise ApiError(403, "metrics need an admin API key")
    body = request.app[METRICS].render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})
