"""Domain errors: what the scheduler and its queries refuse, for the web layer to map to HTTP.

The web layer maps each one in one place (web/errors.py); the domain never knows about
status codes.
"""

from __future__ import annotations

# How long a client should wait before trying again while the server shuts down: a
# restart under a supervisor takes a few seconds.
SHUTDOWN_RETRY_AFTER = 5


class DomainError(Exception):
    """Something a caller asked for that the domain refuses; the message says why."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Conflict(DomainError):
    """The task is in a state that does not allow the action."""


class IdempotencyConflict(Conflict):
    """An Idempotency-Key already named a task made by a different request."""


class Invalid(DomainError):
    """What was asked for cannot be done as given (e.g. a format selector yt-dlp rejects)."""


class NotFound(DomainError):
    """No such thing, or one the caller may not see (the two are never told apart)."""


class ShuttingDown(DomainError):
    """The server is stopping and takes no new work; try again after `retry_after` s."""

    def __init__(
        self,
        message: str = "the server is shutting down",
        retry_after: int = SHUTDOWN_RETRY_AFTER,
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
