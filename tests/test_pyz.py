"""The single-file build: scripts/build-pyz makes a .pyz that runs on a bare Python.

Built once per session (about 20-30 s), then started the way a user on another machine
would: `python3 -I progress-server.pyz serve`, with no PYTHONPATH, an empty environment
and a working directory outside the repository.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.plainhttp import NO_PROXY
from tests.serverproc import REPO_ROOT, free_port

# shiv is in the [test] extra: a missing one is a broken set-up, so no skip here.
pytestmark = [pytest.mark.timeout(300)]

# The interpreter under any virtualenv: nothing of ours is installed there, as on a machine
# that has only Python.
PYTHON = getattr(sys, "_base_executable", None) or sys.executable


@pytest.fixture(scope="module")
def pyz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist") / "progress-server.pyz"
    build = subprocess.run(
        [str(REPO_ROOT / "scripts" / "build-pyz"), str(out)],
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    assert out.is_file()
    return out


def bare_env(home: Path) -> dict[str, str]:
    """What a fresh machine has: a PATH and a HOME (shiv unpacks into HOME/.shiv)."""
    return {"PATH": "/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8"}


def run_pyz(pyz: Path, *args: str, home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-I", str(pyz), *args],
        env=bare_env(home),
        cwd=home,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def get(url: str, key: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url)
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with NO_PROXY.open(request, timeout=5) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.fixture
def served(pyz: Path, tmp_path: Path) -> Iterator[tuple[str, str, Path]]:
    """The .pyz serving on a free port; yields (base URL, an API key, HOME)."""
    home = tmp_path / "home"
    home.mkdir()
    data = tmp_path / "data"
    created = run_pyz(pyz, "keys", "create", "pyz", "--data-dir", str(data), home=home)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1]

    port = free_port()
    log = (tmp_path / "server.log").open("wb")
    proc = subprocess.Popen(
        [PYTHON, "-I", str(pyz), "serve", "--data-dir", str(data), "--port", str(port)],
        env=bare_env(home),
        cwd=home,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (tmp_path / "server.log").read_text()
            try:
                if get(base + "/healthz")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "server.log").read_text()
            time.sleep(0.1)
        yield base, key, home
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
    assert proc.returncode == 0, (tmp_path / "server.log").read_text()


def test_pyz_serves_on_a_bare_python(served: tuple[str, str, Path]) -> None:
    base, key, _home = served
    status, body = get(base + "/healthz")
    assert status == 200
    assert json.loads(body)["status"] == "ok"
    # Migrations were found inside the archive: the API answers from SQLite.
    status, body = get(base + "/api/downloads", key)
    assert status == 200
    assert json.loads(body) == {"tasks": [], "next_cursor": None}
    # Templates and static files were found too.
    status, page = get(base + "/")
    assert status == 200
    assert b"<html" in page
    assert get(base + "/static/app.css")[0] == 200


def test_pyz_carries_the_client_commands(pyz: Path, served: tuple[str, str, Path]) -> None:
    base, key, home = served
    listed = run_pyz(pyz, "ls", "--json", "--server", base, "--api-key", key, home=home)
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == []
