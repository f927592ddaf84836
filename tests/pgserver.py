"""A real PostgreSQL server (Debian's `postgresql` package) that the tests start themselves.

`PgServer` makes a throwaway cluster in a temp folder: `initdb`, then `pg_ctl start` on a
free port with fsync off, its unix socket inside the folder. `initdb` refuses to run as
root, so as root every PostgreSQL command runs through `runuser -u postgres` and the folder
belongs to postgres. The pytest fixtures below start one server per session, build a
template database with the shipped migrations once, and give each test its own database
copied from it (a copy takes a few milliseconds; migrations would take longer).

Plain classes and functions first, so bench/ scripts can use them without pytest.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Self

import asyncpg
import pytest

from progress_server.store.postgres import PostgresStore
from progress_server.store.postgres_migrations import apply_migrations
from tests.serverproc import free_port

TEMPLATE_DB = "progress_template"
_RUN_AS = "postgres"


def postgres_bindir() -> Path:
    """The folder holding initdb and pg_ctl: Debian keeps them out of PATH, per version."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if not versions:
        raise RuntimeError(
            "PostgreSQL is not installed: apt-get install -y postgresql (scripts/test does it)"
        )
    return versions[-1].parent


class PgServer:
    """One PostgreSQL cluster in a temp folder, reachable at `url(dbname)` over TCP."""

    def __init__(self, *, fsync: bool = False) -> None:
        # fsync off by default: a test cluster is thrown away, so durability costs only
        # time; benchmarks turn it on to measure what a real server pays per commit.
        self.fsync = fsync
        self.bindir = postgres_bindir()
        self.port = 0
        self.root: Path | None = None
        self._as_postgres = os.geteuid() == 0

    @property
    def data_dir(self) -> Path:
        assert self.root is not None, "server not started"
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        assert self.root is not None, "server not started"
        return self.root / "sock"

    @property
    def log_path(self) -> Path:
        assert self.root is not None, "server not started"
        return self.root / "postgres.log"

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        # Not pytest's tmp_path: that lives under a root-only folder postgres cannot enter.
        self.root = Path(tempfile.mkdtemp(prefix="progress-pg-"))
        self.socket_dir.mkdir()
        if self._as_postgres:
            owner = pwd.getpwnam(_RUN_AS)
            for path in (self.root, self.socket_dir):
                os.chown(path, owner.pw_uid, owner.pw_gid)
        self._run(
            "initdb",
            "-D",
            str(self.data_dir),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--no-locale",
            "--no-sync",
        )
        # A port is free only "a moment ago": another process may take it first; retry.
        for _ in range(5):
            self.port = free_port()
            try:
                self._pg_ctl_start()
                return
            except subprocess.CalledProcessError:
                if "could not bind" not in self.log_text():
                    raise RuntimeError(f"pg_ctl start failed\n{self.log_text()}") from None
        raise RuntimeError(f"no free port for PostgreSQL\n{self.log_text()}")

    def _pg_ctl_start(self) -> None:
        options = [
            f"-c fsync={'on' if self.fsync else 'off'}",
            f"-p {self.port}",
            f"-k {self.socket_dir}",
            "-c listen_addresses=127.0.0.1",
            "-c max_connections=300",
            f"-c full_page_writes={'on' if self.fsync else 'off'}",
        ]
        self._run(
            "pg_ctl",
            "-D",
            str(self.data_dir),
            "-l",
            str(self.log_path),
            "-o",
            " ".join(options),
            "-w",
            "-t",
            "60",
            "start",
        )

    def restart(self) -> None:
        """Stop (fast: clients are disconnected) and start again on the same port."""
        self.halt()
        self.resume()

    def halt(self) -> None:
        """Stop the server (fast: clients are disconnected), keeping its data."""
        self._run("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "stop")

    def resume(self) -> None:
        """Start a halted server again, on the same port."""
        self._pg_ctl_start()

    def stop(self) -> None:
        if self.root is None:
            return
        if (self.data_dir / "postmaster.pid").exists():
            with contextlib.suppress(subprocess.CalledProcessError):
                self._run("pg_ctl", "-D", str(self.data_dir), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)
        self.root = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except (FileNotFoundError, AssertionError):
            return ""

    def _run(self, program: str, *args: str) -> None:
        cmd: Sequence[str] = [str(self.bindir / program), *args]
        if self._as_postgres:
            cmd = ["runuser", "-u", _RUN_AS, "--", *cmd]
        # cwd: postgres must be able to enter it, and root's home may be closed to it.
        subprocess.run(cmd, check=True, capture_output=True, cwd=self.root, timeout=120)

    # -- databases ---------------------------------------------------------------------

    async def create_database(self, name: str, template: str = "template0") -> str:
        """Create database `name` as a copy of `template`; returns its URL."""
        conn = await asyncpg.connect(self.url())
        try:
            # Identifiers cannot be parameters; both names are ours (hex), never input.
            await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        finally:
            await conn.close()
        return self.url(name)

    async def drop_database(self, name: str) -> None:
        conn = await asyncpg.connect(self.url())
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    async def create_template(self) -> None:
        """The template every test database copies: an empty database, migrated."""
        url = await self.create_database(TEMPLATE_DB)
        await apply_migrations(url)

    @contextlib.asynccontextmanager
    async def database(self, template: str = TEMPLATE_DB) -> AsyncIterator[str]:
        """A fresh database for one test (or one benchmark), dropped afterwards."""
        name = f"test_{uuid.uuid4().hex}"
        url = await self.create_database(name, template)
        try:
            yield url
        finally:
            await self.drop_database(name)


# --------------------------------------------------------------------------------------
# pytest fixtures (registered through tests/conftest.py's pytest_plugins): pg_server,
# pg_url, pg_empty_url, pg_store
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """One PostgreSQL for the whole session, started on first use."""
    with PgServer() as server:
        # In a thread of its own: an async fixture may ask for this one lazily
        # (getfixturevalue), and then this thread's event loop is already running.
        with ThreadPoolExecutor(1) as thread:
            thread.submit(lambda: asyncio.run(server.create_template())).result()
        yield server


@pytest.fixture
async def pg_url(pg_server: PgServer) -> AsyncIterator[str]:
    """The URL of a migrated database of this test's own."""
    async with pg_server.database() as url:
        yield url


@pytest.fixture
async def pg_empty_url(pg_server: PgServer) -> AsyncIterator[str]:
    """The URL of an empty database (no migrations), for tests of the migrations."""
    async with pg_server.database(template="template0") as url:
        yield url


@pytest.fixture
async def pg_store(pg_url: str) -> AsyncIterator[PostgresStore]:
    """An open PostgresStore on this test's own database."""
    store = PostgresStore(pg_url, max_connections=30)
    await store.open()
    try:
        yield store
    finally:
        await store.close()
