"""The exceptions the client raises, and how an error answer of the server becomes one."""

from __future__ import annotations

import json


class ProgressClientError(Exception):
    """Anything that went wrong talking to the server."""


class ServerUnreachable(ProgressClientError):
    """No answer: the server is down, the address is wrong, or the connection broke."""


class ApiError(ProgressClientError):
    """The server answered with an error: `{"error": {"type", "message"}}`."""

    def __init__(self, status: int, error_type: str, message: str) -> None:
        super().__init__(f"{message} ({error_type}, HTTP {status})")
        self.status = status
        self.type = error_type
        self.message = message


class SubscriptionError(ProgressClientError):
    """The WebSocket refused a subscription (an `error` frame), e.g. an unknown task."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(f"{message} ({error_type})")
        self.type = error_type
        self.message = message


def api_error(status: int, text: str) -> ApiError:
    """The error answer's `{"error": {"type", "message"}}`, or its first words when a proxy
    in between answered with something else."""
    try:
        error = json.loads(text)["error"]
        return ApiError(status, str(error["type"]), str(error["message"]))
    except (ValueError, KeyError, TypeError):
        return ApiError(status, "http_error", text.strip()[:200] or f"HTTP {status}")
