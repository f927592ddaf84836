"""Liveness for process supervisors and load balancers; needs no key."""

from __future__ import annotations

from aiohttp import web

from progress_server import __version__
from progress_server.appkeys import SCHEDULER


async def healthz(request: web.Request) -> web.Response:
    scheduler = request.app[SCHEDULER]
    if not scheduler.accepting:
        return web.json_response({"status": "stopping"}, status=503)
    return web.json_response({"status": "ok", "version": __version__})
