"""Log set-up: one line per task transition, as text for people or JSON for machines.

Every line passes through `Redactor` on its way out, whatever logger wrote it: URL query
strings and credentials, API keys, Bearer tokens, cookies and the configured secrets
(the webhook secret) never reach the log, even inside a traceback.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Iterable

from aiohttp.http_exceptions import HttpProcessingError

REDACTED = "[redacted]"
_PATTERNS = (
    # A URL's userinfo and query string: `scheme://user:pass@host/path?query#frag`.
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^\s/@'\"<>]+@"), r"\1" + REDACTED + "@"),
    (re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://[^\s?#'\"<>]*)\?[^\s#'\"<>]*"), r"\1?" + REDACTED),
    (re.compile(r"psk_[A-Za-z0-9_-]{8,}"), "psk_" + REDACTED),
    (re.compile(r"(?i)\b(bearer\s+)[^\s'\",]+"), r"\1" + REDACTED),
    (re.compile(r"(?i)\b((?:set-)?cookie['\"]?\s*[:=]\s*['\"]?)[^\n'\"]+"), r"\1" + REDACTED),
)


class Redactor:
    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        # Longest first, so a secret containing another is replaced whole.
        self.secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        for pattern, replacement in _PATTERNS:
            text = pattern.sub(replacement, text)
        return text


class TextFormatter(logging.Formatter):
    def __init__(self, redact: Redactor) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self.redact = redact

    def format(self, record: logging.LogRecord) -> str:
        return self.redact(super().format(record))


class JsonFormatter(logging.Formatter):
    def __init__(self, redact: Redactor | None = None) -> None:
        super().__init__()
        self.redact = redact or Redactor()

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": self.redact(record.getMessage()),
        }
        if record.exc_info:
            entry["exception"] = self.redact(self.formatException(record.exc_info))
        return json.dumps(entry)


class MalformedRequests(logging.Filter):
    """aiohttp logs every unparsable request with a traceback; one line is enough for a
    client's mistake (and a spray of bad requests must not flood the log)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            first_line = (exc.message or "").strip().splitlines()[:1]
            record.msg = "malformed HTTP request refused with %s: %s"
            record.args = (exc.code, first_line[0][:200] if first_line else "")
            record.exc_info = None
            record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def configure(
    log_format: str = "text", level: int = logging.INFO, secrets: Iterable[str | None] = ()
) -> None:
    redact = Redactor(secrets)
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter(redact))
    else:
        handler.setFormatter(TextFormatter(redact))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # aiohttp's access log would print a line per poll; operators asked for task lines.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    server_log = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, MalformedRequests) for f in server_log.filters):
        server_log.addFilter(MalformedRequests())
