"""--webhook: POST a final event to the operator's URL, signed as GitHub signs its webhooks."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
from urllib.parse import urlsplit

import aiohttp

from progress_server.models import Event
from progress_server.notifications.hookresult import HookOutcome

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Progress-Signature"
ATTEMPTS = 5


def signature(secret: str, body: bytes) -> str:
    """`sha256=<hex HMAC-SHA256 of body>`: what the receiver recomputes and compares."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def webhook_body(event: Event) -> bytes:
    return json.dumps(event.to_wire(), separators=(",", ":")).encode()


class WebhookSender:
    def __init__(
        self,
        url: str,
        secret: str | None,
        timeout: float,
        base_delay: float,
        max_delay: float,
    ) -> None:
        self.url = url
        self.secret = secret
        self.timeout = timeout
        self.base_delay = base_delay
        self.max_delay = max_delay
        self._session: aiohttp.ClientSession | None = None

    @property
    def where(self) -> str:
        """The URL as logs may show it: no credentials, no query string."""
        parts = urlsplit(self.url)
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{parts.hostname or ''}{port}{parts.path}"

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.timeout),
            headers={"User-Agent": "progress-server"},
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def send(self, event: Event) -> HookOutcome:
        """Deliver `event`, retrying network errors, timeouts, 408, 429 and 5xx with backoff."""
        assert self._session is not None, "start() the sender first"
        body = webhook_body(event)
        headers = {
            "Content-Type": "application/json",
            "X-Progress-Event": event.name.value,
            "X-Progress-Delivery": f"{event.seq}",
        }
        if self.secret:
            headers[SIGNATURE_HEADER] = signature(self.secret, body)
        status: int | None = None
        message = ""
        for attempt in range(1, ATTEMPTS + 1):
            retryable = True
            try:
                async with self._session.post(
                    self.url, data=body, headers=headers, allow_redirects=False
                ) as response:
                    status = response.status
                if 200 <= status < 300:
                    return HookOutcome("webhook", True, attempt, f"HTTP {status}", status=status)
                message = f"HTTP {status}"
                retryable = status >= 500 or status in (408, 429)
            except TimeoutError:
                status, message = None, f"no answer within {self.timeout:g} s"
            except aiohttp.ClientError as exc:
                # The task's owner reads this message: the URL's query may hold a token.
                text = str(exc).replace(self.url, self.where)
                status, message = None, f"{type(exc).__name__}: {text}"
            if not retryable or attempt == ATTEMPTS:
                return HookOutcome("webhook", False, attempt, message, status=status)
            delay = min(self.base_delay * 2 ** (attempt - 1), self.max_delay)
            log.info(
                "webhook to %s failed (%s), attempt %d, retrying in %.1fs",
                self.where,
                message,
                attempt,
                delay,
            )
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")
