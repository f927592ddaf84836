"""NewTask: what a request asks the scheduler for, and its fingerprint in canonical form."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass

from progress_server.models import JSON


@dataclass
class NewTask:
    url: str
    filename: str | None = None
    sha256: str | None = None
    options: JSON | None = None
    idempotency_key: str | None = None
    # "auto", "http" or "media" as asked; Scheduler.submit() resolves "auto" (media/source.py).
    source: str = "auto"

    def fingerprint(self) -> str:
        """The SHA-256 of what this request asks for, in canonical form: the same request
        written with other key order, spacing, checksum case or explicit nulls hashes alike.
        Every field counts but the Idempotency-Key itself."""
        asked = dataclasses.asdict(self)
        del asked["idempotency_key"]
        asked["sha256"] = self.sha256.lower() if self.sha256 else None
        asked["options"] = self.options or {}
        text = json.dumps(asked, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(text.encode()).hexdigest()
