"""Status-page sessions, kept by the server: create, look up and end them.

A session is a random token whose SHA-256 only is kept, in the database (so a restart does
not log anyone out) and in memory (so a request costs no query). Each session has its own
CSRF token. The session names a key, not a principal: revoking the key ends its sessions.
How a session travels (an HttpOnly cookie) is the web layer's business: web/sessions.py.

In a cluster the page's next request may reach another node: a session this node does not
know is looked up in the shared database (`find`), and the sessions it knows are checked
against it every second, so a logout on one node ends the session on all of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from progress_server.store import SessionRow, Store

LIFETIME = 14 * 24 * 3600.0
REFRESH_SECONDS = 1.0

log = logging.getLogger(__name__)


class SharedSessions(Protocol):
    """A database other nodes write sessions to too (cluster mode)."""

    async def session_by_hash(self, token_hash: str, now: float) -> SessionRow | None: ...

    async def live_session_hashes(self, token_hashes: Sequence[str], now: float) -> set[str]: ...


@dataclass(frozen=True)
class Session:
    token_hash: str
    key_id: int
    csrf_token: str
    expires_at: float

    def csrf_matches(self, submitted: str | None) -> bool:
        return bool(submitted) and hmac.compare_digest(
            self.csrf_token.encode(), str(submitted).encode()
        )


def _session(row: SessionRow) -> Session:
    return Session(row.token_hash, row.key_id, row.csrf_token, row.expires_at)


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class SessionStore:
    def __init__(
        self, store: Store, lifetime: float = LIFETIME, shared: SharedSessions | None = None
    ) -> None:
        self._store = store
        self._lifetime = lifetime
        self._shared = shared
        self._by_hash: dict[str, Session] = {}
        self._refresher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.load()
        if self._shared is not None:
            self._refresher = asyncio.create_task(self._refresh_forever(), name="sessions")

    async def stop(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher

    async def load(self) -> None:
        rows = await self._store.live_sessions(time.time())
        self._by_hash = {row.token_hash: _session(row) for row in rows}

    async def create(self, key_id: int) -> tuple[str, Session]:
        """A new session for this key: (token, session)."""
        token = secrets.token_urlsafe(32)
        now = time.time()
        # Expired sessions leave memory here and SQLite at the next start (Store.live_sessions).
        self._by_hash = {h: s for h, s in self._by_hash.items() if s.expires_at > now}
        session = Session(_hash(token), key_id, secrets.token_urlsafe(32), now + self._lifetime)
        await self._store.insert_session(
            SessionRow(session.token_hash, key_id, session.csrf_token, now, session.expires_at)
        )
        self._by_hash[session.token_hash] = session
        return token, session

    async def find(self, token: str | None) -> None:
        """Make a session another node made known here, so `get` finds it (cluster mode;
        alone, every session is in memory already)."""
        if self._shared is None or not token or len(token) > 200:
            return
        token_hash = _hash(token)
        if token_hash in self._by_hash:
            return
        row = await self._shared.session_by_hash(token_hash, time.time())
        if row is not None:
            self._by_hash[token_hash] = _session(row)

    async def _refresh_forever(self) -> None:
        assert self._shared is not None
        while True:
            await asyncio.sleep(REFRESH_SECONDS)
            known = list(self._by_hash)
            try:
                live = await self._shared.live_session_hashes(known, time.time())
            except Exception as exc:  # the database may be away for a while: try again
                log.debug("could not check sessions: %s", exc)
                continue
            for token_hash in set(known) - live:
                self._by_hash.pop(token_hash, None)

    def get(self, token: str | None) -> Session | None:
        if not token or len(token) > 200:
            return None
        session = self._by_hash.get(_hash(token))
        if session is None or session.expires_at <= time.time():
            return None
        return session

    async def end(self, session: Session) -> None:
        self._by_hash.pop(session.token_hash, None)
        await self._store.delete_session(session.token_hash)
