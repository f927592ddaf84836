"""`progress-server keys create|list|revoke`, run as a user runs them: a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from click.testing import CliRunner, Result

from progress_server.cli import main
from tests.plainhttp import NO_PROXY
from tests.serverproc import REPO_ROOT, ServerProcess, create_key


def cli(*args: str, env: dict[str, str] | None = None) -> Result:
    """The real CLI, in-process: the same code path as the console script, without the
    second or two each fresh interpreter costs on a loaded machine."""
    return CliRunner().invoke(main, list(args), env=env)


def cli_subprocess(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "progress_server", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        check=False,
    )


def status_with_key(server: ServerProcess, key: str) -> int:
    request = urllib.request.Request(
        f"{server.base_url}/api/downloads", headers={"Authorization": f"Bearer {key}"}
    )
    try:
        with NO_PROXY.open(request, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_create_prints_the_key_and_stores_only_its_hash(tmp_path: Path) -> None:
    data = tmp_path / "data"
    # This one as a user runs it: `python -m progress_server` in its own process.
    result = cli_subprocess("keys", "create", "alice", "--data-dir", str(data))
    assert result.returncode == 0, result.stderr
    key = result.stdout.strip().splitlines()[-1]
    assert key.startswith("psk_") and len(key) > 40
    raw = b"".join(p.read_bytes() for p in data.glob("progress.db*"))
    assert key.encode() not in raw
    assert b"alice" in raw

    again = cli("keys", "create", "alice", "--data-dir", str(data))
    assert again.exit_code != 0
    assert "already exists" in again.stderr


def test_list_and_revoke(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    assert cli("keys", "create", "bob", "--data-dir", data).exit_code == 0
    assert cli("keys", "create", "root", "--admin", "--data-dir", data).exit_code == 0

    listed = json.loads(cli("keys", "list", "--json", "--data-dir", data).stdout)
    assert [(k["name"], k["admin"], k["revoked_at"]) for k in listed] == [
        ("bob", False, None),
        ("root", True, None),
    ]
    table = cli("keys", "list", "--data-dir", data).stdout
    assert "bob" in table and "root" in table and "psk_" not in table

    revoked = cli("keys", "revoke", "bob", "--data-dir", data)
    assert revoked.exit_code == 0, revoked.stderr
    listed = json.loads(cli("keys", "list", "--json", "--data-dir", data).stdout)
    assert listed[0]["revoked_at"] is not None and listed[0]["revoked_at"].endswith("Z")
    assert listed[1]["revoked_at"] is None

    missing = cli("keys", "revoke", "nobody", "--data-dir", data)
    assert missing.exit_code != 0
    assert "no active key" in missing.stderr


def test_data_dir_from_the_environment(tmp_path: Path) -> None:
    data = tmp_path / "from-env"
    result = cli("keys", "create", "carol", env={"PROGRESS_SERVER_DATA_DIR": str(data)})
    assert result.exit_code == 0, result.stderr
    assert (data / "progress.db").exists()
    listed = json.loads(cli("keys", "list", "--json", "--data-dir", str(data)).stdout)
    assert [k["name"] for k in listed] == ["carol"]


def test_keys_made_and_revoked_while_the_server_runs(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with ServerProcess(data) as server:
        key = create_key(data, "late")
        assert status_with_key(server, key) == 200
        assert cli("keys", "revoke", "late", "--data-dir", str(data)).exit_code == 0
        deadline = time.monotonic() + 5
        while status_with_key(server, key) != 401:
            assert time.monotonic() < deadline, "revoked key still accepted"
            time.sleep(0.1)
