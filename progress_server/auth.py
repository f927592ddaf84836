"""API keys: creation, hashing, lookup on every request, and the slow-down for bad keys.

Keys are 256-bit random tokens stored only as their SHA-256; lookups are served from an
in-memory copy of the keys table. The copy is reloaded whenever the store's key generation
(Store.key_generation: a cheap, synchronous check) says any process changed a key, both
before each authentication and by a watcher 50 times a second, so a key revoked from the
CLI is refused by the very next request, and whoever listens (the WebSocket hub) hears of
it at once to close the key's open sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from progress_server.store import ApiKeyRow, Store

log = logging.getLogger(__name__)

KEY_PREFIX = "psk_"
# How often the watcher asks whether keys changed (a few microseconds each time).
WATCH_SECONDS = 0.02
# A request asks again only when the last answer is older than this. `keys revoke` takes
# far longer than this from its commit to its exit, so a request sent after the command
# returned always asks; a busy poller (thousands a second) does not pay for each request.
FRESH_SECONDS = 0.001
# Failed logins from one address: this many in the window are free, then 429 until they age out.
FAILURES_ALLOWED = 10
FAILURE_WINDOW = 60.0
# Keys whose hash is remembered; cleared when full, so a spray of wrong keys cannot grow it.
_DIGEST_MEMO_SIZE = 1024


@dataclass(frozen=True)
class Principal:
    key_id: int
    name: str
    is_admin: bool

    def may_see(self, owner_key_id: int) -> bool:
        return self.is_admin or owner_key_id == self.key_id

    @property
    def owner_filter(self) -> int | None:
        """The owner to filter lists by: None for admins, who see every task."""
        return None if self.is_admin else self.key_id


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def bearer_token(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


class KeyRing:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._by_hash: dict[str, ApiKeyRow] = {}
        # key -> its SHA-256, so a poller's every request does not hash its key again.
        # Revocation still bites at once: the digest is looked up in _by_hash each time.
        self._digests: dict[str, str] = {}
        self._generation: int | None = None
        self._checked_at = float("-inf")
        self._reload_lock = asyncio.Lock()
        self._watcher: asyncio.Task[None] | None = None
        # Told the key ids that stopped being live at a reload (the WebSocket hub).
        self.revoked_listeners: list[Callable[[set[int]], None]] = []

    async def start(self) -> None:
        await self.refresh()
        self._watcher = asyncio.create_task(self._watch(), name="key-watcher")

    async def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher

    async def refresh(self) -> None:
        """Reload the live keys unless nothing changed since the last load."""
        async with self._reload_lock:
            generation = self._store.key_generation()
            if generation == self._generation:
                return
            rows = await self._store.list_keys()
            before = {row.key_id for row in self._by_hash.values()}
            self._by_hash = {row.key_hash: row for row in rows if row.revoked_at is None}
            self._generation = generation
        gone = before - {row.key_id for row in self._by_hash.values()}
        if gone:
            for listener in self.revoked_listeners:
                listener(gone)

    async def current(self) -> None:
        """Make sure the copy reflects every key change committed until a millisecond ago
        (FRESH_SECONDS): cheap when none was."""
        now = time.monotonic()
        if now - self._checked_at < FRESH_SECONDS:
            return
        self._checked_at = now
        if self._store.key_generation() != self._generation:
            await self.refresh()

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(WATCH_SECONDS)
            try:
                await self.current()
            except Exception:
                log.exception("could not reload the API keys")

    async def authenticate(self, key: str | None) -> Principal | None:
        if not key or len(key) > 200:
            return None
        await self.current()
        digest = self._digests.get(key)
        if digest is None:
            digest = hash_key(key)
            if len(self._digests) >= _DIGEST_MEMO_SIZE:
                self._digests.clear()
            self._digests[key] = digest
        row = self._by_hash.get(digest)
        if row is None:
            # A key made by the CLI since the last refresh: look once, then it is cached.
            row = await self._store.key_by_hash(digest)
            if row is None or row.revoked_at is not None:
                return None
            self._by_hash[digest] = row
        # Constant-time compare, though the dict lookup already matched the hash.
        if not hmac.compare_digest(row.key_hash, digest):
            return None
        return Principal(row.key_id, row.name, row.is_admin)

    def principal_by_id(self, key_id: int) -> Principal | None:
        """The principal of a live key by id (page sessions); None once it is revoked."""
        for row in self._by_hash.values():
            if row.key_id == key_id:
                return Principal(row.key_id, row.name, row.is_admin)
        return None

    def forget(self, key_hash: str) -> None:
        self._by_hash.pop(key_hash, None)


class FailedLoginLimiter:
    """Counts failed authentications per address; past the allowance, answers wait."""

    def __init__(self, allowed: int = FAILURES_ALLOWED, window: float = FAILURE_WINDOW) -> None:
        self.allowed = allowed
        self.window = window
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, address: str, now: float) -> deque[float]:
        failures = self._failures.setdefault(address, deque())
        while failures and failures[0] <= now - self.window:
            failures.popleft()
        return failures

    def retry_after(self, address: str) -> float:
        """Seconds this address must wait before trying again (0: go ahead)."""
        now = time.monotonic()
        failures = self._recent(address, now)
        if len(failures) < self.allowed:
            if not failures:
                self._failures.pop(address, None)
            return 0.0
        return max(failures[0] + self.window - now, 0.1)

    def record_failure(self, address: str) -> None:
        now = time.monotonic()
        self._recent(address, now).append(now)
        if len(self._failures) > 10_000:
            # Bounded memory under a spray of addresses: drop the oldest entries.
            for stale in list(self._failures)[:1000]:
                del self._failures[stale]
