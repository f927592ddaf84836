"""KeyGenerationWatch: tells SqliteStore, for a microsecond or two, whether any process has
changed an API key since it last looked (Store.key_generation).

A plain sqlite3 connection read from the event loop itself: `PRAGMA data_version` answers
from memory shared with the other connections, far cheaper than a hop to aiosqlite's thread,
and changes only when another connection (this server's writer, or the CLI) has committed.
Only then is the counter that migration 0004's api_keys triggers keep read (one row).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path


class KeyGenerationWatch:
    def __init__(self, path: Path) -> None:
        self._path = path
        self._conn: sqlite3.Connection | None = None
        self._data_version: int | None = None
        self._generation = 0

    def open(self) -> None:
        self._conn = sqlite3.connect(self._path, isolation_level=None)
        # Readers never wait on a WAL writer; this only covers a checkpoint's brief lock.
        self._conn.execute("PRAGMA busy_timeout=100")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def generation(self) -> int:
        conn = self._conn
        assert conn is not None, "store is not open"
        try:
            version = conn.execute("PRAGMA data_version").fetchone()[0]
            if version != self._data_version:
                # Read after the version: a commit in between only makes the next call
                # read the counter again.
                row = conn.execute("SELECT value FROM key_generation WHERE id = 1").fetchone()
                self._generation = int(row[0])
                self._data_version = version
        except sqlite3.Error:
            # Unreadable for a moment: the next call asks again.
            self._data_version = None
        return self._generation
