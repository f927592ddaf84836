"""The OpenAPI 3.1 document of the whole HTTP surface, built by plain functions.

`tests/test_openapi.py` keeps it true: every route of the app must be documented and every
documented route must exist. Fields the guide lacks are marked `x-extra: true`.
"""

from __future__ import annotations

from progress_server import __version__
from progress_server.openapi.api_paths import (
    download_paths,
    operations_paths,
    progress_paths,
    websocket_paths,
)
from progress_server.openapi.blocks import JSON
from progress_server.openapi.page_paths import page_paths
from progress_server.openapi.schemas import schemas

__all__ = ["build_document"]


def build_document() -> JSON:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "progress-server",
            "version": __version__,
            "description": "A self-hosted download server with live progress. Error bodies "
            'are always `{"error": {"type", "message"}}`. Fields marked `x-extra` are '
            "additions to the progress tracking guide's shapes.",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearerAuth": []}],
        "paths": {
            **operations_paths(),
            **download_paths(),
            **progress_paths(),
            **websocket_paths(),
            **page_paths(),
        },
        "components": {
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key from `progress-server keys create`.",
                }
            },
            "schemas": schemas(),
        },
    }
