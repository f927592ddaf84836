"""Starting a cluster node: a database it cannot use stops it with a clear message, a
password in the database URL never reaches a log line, and a node keeps the id it made."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.clusterkit import run_cli
from tests.pgserver import PgServer
from tests.serverproc import ServerProcess

SECRET = "s3cret-pw-4711"


def _with_password(url: str, password: str = SECRET) -> str:
    return url.replace("postgres@", f"postgres:{password}@", 1)


async def test_a_database_it_cannot_use_stops_the_node_with_the_reason(
    tmp_path: Path, pg_server: PgServer
) -> None:
    missing = _with_password(pg_server.url("no_such_db"))
    server = ServerProcess(tmp_path / "node", "--database", missing)
    with pytest.raises(RuntimeError) as failed:
        await asyncio.to_thread(server.start, 30)
    text = str(failed.value)
    assert "could not start: cannot use the database" in text
    assert "no_such_db" in text and SECRET not in text

    keys = await asyncio.to_thread(run_cli, tmp_path, "keys", "list", "--database", missing)
    assert keys.returncode != 0
    assert "cannot use the database" in keys.stderr and SECRET not in keys.stderr
    assert "Traceback" not in keys.stderr


async def test_a_node_names_itself_once_and_never_logs_the_password(
    tmp_path: Path, pg_url: str
) -> None:
    url = _with_password(pg_url)  # the test server trusts every login: any password works
    data = tmp_path / "node"
    server = ServerProcess(data, "--database", url, "--min-free-space", "0")
    await asyncio.to_thread(server.start, 30)
    try:
        made = (data / "node-id").read_text().strip()
        assert made and "cluster node " + made in server.log_text()
    finally:
        await asyncio.to_thread(server.stop)
    await asyncio.to_thread(server.start, 30)
    await asyncio.to_thread(server.stop)
    assert (data / "node-id").read_text().strip() == made, "the same id after a restart"
    assert server.log_text().count(f"cluster node {made},") == 2
    assert SECRET not in server.log_text()
