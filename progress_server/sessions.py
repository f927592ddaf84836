"""Status-page sessions, kept by the server: create, look up and end them.

A session is a random token whose SHA-256 only is kept, in SQLite (so a restart does not log
anyone out) and in memory (so a request costs no query). Each session has its own CSRF
token. The session names a key, not a principal: revoking the key ends its sessions. How a
session travels (an HttpOnly cookie) is the web layer's business: web/sessions.py.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from progress_server.store import SessionRow, Store

LIFETIME = 14 * 24 * 3600.0


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


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class SessionStore:
    def __init__(self, store: Store, lifetime: float = LIFETIME) -> None:
        self._store = store
        self._lifetime = lifetime
        self._by_hash: dict[str, Session] = {}

    async def load(self) -> None:
        rows = await self._store.live_sessions(time.time())
        self._by_hash = {
            row.token_hash: Session(row.token_hash, row.key_id, row.csrf_token, row.expires_at)
            for row in rows
        }

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
