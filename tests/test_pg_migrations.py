"""PostgreSQL migrations: each applied once, recorded, safe when nodes start together, and
kept in step with the SQLite ones."""

from __future__ import annotations

import asyncio

import asyncpg

from progress_server.resources import migrations_dir
from progress_server.store.postgres import PostgresStore
from progress_server.store.postgres_migrations import apply_migrations, postgres_migrations_dir


def _shipped() -> list[int]:
    return sorted(int(p.name.split("_", 1)[0]) for p in postgres_migrations_dir().glob("*.sql"))


async def test_every_sqlite_migration_has_a_postgresql_twin() -> None:
    # A schema change made for one backend only would make the two disagree about a task.
    sqlite = sorted(p.name for p in migrations_dir().glob("*.sql"))
    postgres = sorted(p.name for p in postgres_migrations_dir().glob("*.sql"))
    assert sqlite, "no SQLite migrations found"
    assert postgres == sqlite


async def test_migrations_are_applied_once_and_recorded(pg_empty_url: str) -> None:
    shipped = _shipped()
    assert shipped[0] == 1

    store = PostgresStore(pg_empty_url)
    await store.open()
    assert await store.applied_migrations() == shipped
    await store.create_key("k", "hash", False)
    await store.close()

    conn = await asyncpg.connect(pg_empty_url)
    try:
        first = await conn.fetch("SELECT version, name, applied_at FROM schema_migrations")
        assert first[0]["name"] == "0001_initial.sql"
    finally:
        await conn.close()

    # Opening again applies nothing (a second CREATE TABLE would fail) and keeps the data.
    again = PostgresStore(pg_empty_url)
    await again.open()
    try:
        assert await again.applied_migrations() == shipped
        assert [k.name for k in await again.list_keys()] == ["k"]
    finally:
        await again.close()
    conn = await asyncpg.connect(pg_empty_url)
    try:
        assert await conn.fetch("SELECT version, name, applied_at FROM schema_migrations") == first
    finally:
        await conn.close()


async def test_nodes_starting_together_apply_each_migration_once(pg_empty_url: str) -> None:
    # Without the advisory lock, two nodes would both see an empty schema_migrations and
    # both run CREATE TABLE: one of them would fail to start.
    results = await asyncio.gather(*(apply_migrations(pg_empty_url) for _ in range(6)))
    assert all(result == _shipped() for result in results)
    conn = await asyncpg.connect(pg_empty_url)
    try:
        versions = [r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")]
        assert sorted(versions) == _shipped()
        # The counter row is seeded once, not once per node.
        assert await conn.fetchval("SELECT count(*) FROM event_seq") == 1
    finally:
        await conn.close()
