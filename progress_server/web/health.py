"""Liveness for process supervisors and load balancers; needs no key.

In cluster mode it names the node and answers 503 while the shared database is out of
reach: a load balancer then sends requests elsewhere (the node claims no work meanwhile).
"""

from __future__ import annotations

from aiohttp import web

from progress_server import __version__
from progress_server.appkeys import SCHEDULER


async def healthz(request: web.Request) -> web.Response:
    scheduler = request.app[SCHEDULER]
    coordinator = scheduler.coordinator
    node = coordinator.health_fields()
    if not scheduler.accepting:
        return web.json_response({"status": "stopping", **node}, status=503)
    if not coordinator.database_reachable:
        body = {"status": "database_unreachable", "version": __version__, **node}
        return web.json_response(body, status=503)
    return web.json_response({"status": "ok", "version": __version__, **node})
