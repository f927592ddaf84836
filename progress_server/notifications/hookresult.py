"""What one hook delivery came to; recorded in the task's history as a `download.hook` event."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from progress_server.models import JSON


@dataclass(frozen=True)
class HookOutcome:
    kind: Literal["command", "webhook"]
    ok: bool
    attempts: int
    message: str
    # The webhook receiver's HTTP status, or the command's exit code; None if there was none.
    status: int | None = None
    exit_code: int | None = None

    def to_wire(self) -> JSON:
        wire: JSON = {"kind": self.kind, "ok": self.ok}
        if self.kind == "webhook":
            wire["status"] = self.status
        else:
            wire["exit_code"] = self.exit_code
        wire["attempts"] = self.attempts
        wire["message"] = self.message
        return wire
