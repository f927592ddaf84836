"""SqliteKeysAndSessions: the API keys and page sessions part of SqliteStore."""

from __future__ import annotations

import sqlite3
import time

from progress_server.store.rows import ApiKeyRow, SessionRow
from progress_server.store.sqlite_connections import SqliteConnections
from progress_server.store.sqlite_rows import key_from_row, session_from_row


class SqliteKeysAndSessions(SqliteConnections):
    """API keys (and whether any process changed one) and the page's sessions."""

    # -- keys --------------------------------------------------------------------------

    async def create_key(self, name: str, key_hash: str, is_admin: bool) -> int:
        def write(db: sqlite3.Connection) -> int:
            cur = db.execute(
                "INSERT INTO api_keys (name, key_hash, is_admin, created_at) VALUES (?, ?, ?, ?)",
                (name, key_hash, int(is_admin), time.time()),
            )
            assert cur.lastrowid is not None
            return cur.lastrowid

        return await self._write(write)

    async def list_keys(self) -> list[ApiKeyRow]:
        rows = await self._rows("SELECT * FROM api_keys ORDER BY key_id")
        return [key_from_row(row) for row in rows]

    async def key_by_hash(self, key_hash: str) -> ApiKeyRow | None:
        row = await self._row("SELECT * FROM api_keys WHERE key_hash = ?", (key_hash,))
        return None if row is None else key_from_row(row)

    async def revoke_key(self, name: str) -> bool:
        def write(db: sqlite3.Connection) -> bool:
            cur = db.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL",
                (time.time(), name),
            )
            return cur.rowcount > 0

        return await self._write(write)

    def key_generation(self) -> int:
        return self._key_watch.generation()

    # -- page sessions -----------------------------------------------------------------

    async def insert_session(self, session: SessionRow) -> None:
        def write(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT INTO sessions (token_hash, key_id, csrf_token, created_at, expires_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (
                    session.token_hash,
                    session.key_id,
                    session.csrf_token,
                    session.created_at,
                    session.expires_at,
                ),
            )

        await self._write(write)

    async def delete_session(self, token_hash: str) -> None:
        def write(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM sessions WHERE token_hash = ?", (token_hash,))

        await self._write(write)

    async def live_sessions(self, now: float) -> list[SessionRow]:
        """Unexpired sessions; expired ones are deleted on the way."""

        def write(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM sessions WHERE expires_at <= ?", (now,))

        await self._write(write)
        rows = await self._rows("SELECT * FROM sessions")
        return [session_from_row(row) for row in rows]
