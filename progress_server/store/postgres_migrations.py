"""PostgreSQL migrations: each applied once, whole, by one node at a time."""

from __future__ import annotations

import time
from pathlib import Path

import asyncpg

from progress_server.resources import migrations_dir

# pg_advisory_lock key under which migrations run. The value is arbitrary but fixed
# ("prog" "mig" in ASCII), so every node takes the same lock.
MIGRATIONS_LOCK = 0x70726F67_6D6967


def postgres_migrations_dir() -> Path:
    """migrations/postgresql: twins of the SQLite migrations, numbered the same."""
    return migrations_dir() / "postgresql"


async def apply_migrations(url: str) -> list[int]:
    """Apply the PostgreSQL migrations not applied yet; returns every applied version.

    Nodes starting together queue on a session advisory lock (released when this
    connection closes, however it closes), so each migration runs once; each runs with its
    bookkeeping row in one transaction, whole or not at all.
    """
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", MIGRATIONS_LOCK)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at double precision NOT NULL)"
        )
        rows = await conn.fetch("SELECT version FROM schema_migrations")
        applied = {row["version"] for row in rows}
        for path in sorted(postgres_migrations_dir().glob("*.sql")):
            version = int(path.name.split("_", 1)[0])
            if version in applied:
                continue
            async with conn.transaction():
                # No arguments: asyncpg sends the script as one simple query, so a file
                # may hold many statements.
                await conn.execute(path.read_text())
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
                    version,
                    path.name,
                    time.time(),
                )
            applied.add(version)
        return sorted(applied)
    finally:
        await conn.close()
