"""`GET /api/openapi.json`: the document from progress_server.openapi."""

from __future__ import annotations

from aiohttp import web

from progress_server.openapi import build_document


async def openapi_document(request: web.Request) -> web.Response:
    return web.json_response(build_document())
