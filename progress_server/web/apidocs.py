"""`GET /api/docs`: the interactive API viewer (Swagger UI) for the OpenAPI document, served
from the packaged `swagger-ui-bundle-v2` files, so it works offline and needs no CDN."""

from __future__ import annotations

from pathlib import Path

import swagger_ui_bundle
from aiohttp import web

from progress_server.web.errors import not_found

# Only these files of the bundle are served; anything else under /api/docs/ is a 404.
ASSETS = {
    "swagger-ui-bundle.js": "application/javascript",
    "swagger-ui.css": "text/css",
}
_HEADERS = {
    "Cache-Control": "no-cache",
    # Swagger UI styles its widgets inline and draws icons as data: URLs.
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
}


def _page(initializer: str) -> str:
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>API · progress-server</title>
<link rel="stylesheet" href="/api/docs/swagger-ui.css">
</head>
<body>
<div id="swagger-ui" data-url="/api/openapi.json"></div>
<script src="/api/docs/swagger-ui-bundle.js" charset="utf-8"></script>
<script src="{initializer}"></script>
</body>
</html>
"""


async def api_docs(request: web.Request) -> web.Response:
    initializer = str(request.app.router["static"].url_for(filename="api-docs.js"))
    return web.Response(text=_page(initializer), content_type="text/html", headers=_HEADERS)


async def api_docs_asset(request: web.Request) -> web.FileResponse:
    name = request.match_info["asset"]
    if name not in ASSETS:
        raise not_found("file")
    path = Path(swagger_ui_bundle.swagger_ui_path) / name
    return web.FileResponse(path, headers={"Content-Type": f"{ASSETS[name]}; charset=utf-8"})
