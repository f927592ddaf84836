"""scripts/setup-env installs only when pyproject.toml changed since the last install, and
scripts/serve prints the exact `keys create` command for the folder it serves (#11).

Run on a copy of the checkout whose .venv borrows this one's packages (a .pth file), so
the only pip runs are the project's own editable installs.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest

from tests.plainhttp import status_once_up
from tests.serverproc import REPO_ROOT, free_port

_SOURCES = ("scripts", "pyproject.toml", "README.md", "progress_server", "migrations", "static")


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("checkout")
    for name in _SOURCES:
        origin = REPO_ROOT / name
        if origin.is_dir():
            shutil.copytree(origin, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(origin, src / name)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", src / ".venv"], check=True)
    purelib = Path(
        subprocess.run(
            [
                src / ".venv/bin/python",
                "-c",
                "import sysconfig; print(sysconfig.get_path('purelib'))",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    (purelib / "borrowed.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return src


def setup_env(checkout: Path, *args: str) -> tuple[str, bool, float]:
    """Run scripts/setup-env: (its stderr, whether pip ran, seconds)."""
    pip_log = checkout / "pip.log"
    pip_log.unlink(missing_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PIP_LOG"] = str(pip_log)
    started = time.monotonic()
    result = subprocess.run(
        [checkout / "scripts/setup-env", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    took = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    return result.stderr, pip_log.exists(), took


def test_setup_env_installs_only_when_pyproject_changed(checkout: Path) -> None:
    first, pip_ran, _ = setup_env(checkout)
    assert pip_ran and "installing" in first

    again, pip_ran, took = setup_env(checkout)
    assert not pip_ran, again
    assert "installing" not in again
    assert took < 2.5, f"an up-to-date .venv took {took:.1f} s"

    # Extras not installed yet are a reason to install; asking again for them is not.
    with_test, pip_ran, _ = setup_env(checkout, "test")
    assert pip_ran and "progress-server[test]" in with_test
    assert not setup_env(checkout, "test")[1]
    assert not setup_env(checkout)[1]

    pyproject = checkout / "pyproject.toml"
    pyproject.write_text(pyproject.read_text() + "\n# a change\n")
    changed, pip_ran, _ = setup_env(checkout)
    assert pip_ran and "pyproject.toml changed" in changed
    # The extras installed before are kept.
    assert "progress-server[test]" in changed
    assert not setup_env(checkout)[1]


def test_serve_prints_the_exact_key_command_for_its_data_folder(checkout: Path) -> None:
    setup_env(checkout)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.pop("PROGRESS_SERVER_DATA_DIR", None)
    server = subprocess.Popen(
        [checkout / "scripts/serve", "--port", str(port), "--data-dir", "my data"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=checkout,
    )
    try:
        assert server.stderr is not None
        lines: list[str] = []
        while not any("keys create" in line for line in lines):
            line = server.stderr.readline()
            assert line, f"serve printed no key command: {lines}"
            lines.append(line)
        assert not any("installing" in line for line in lines), lines
        command = next(line for line in lines if "keys create" in line).strip()
        # Run from elsewhere, exactly as printed (with a name for the key).
        made = subprocess.run(
            shlex.split(command.replace(" NAME", " me")),
            capture_output=True,
            text=True,
            env=env,
            cwd="/",
            timeout=60,
            check=False,
        )
        assert made.returncode == 0, made.stderr
        key = made.stdout.strip().splitlines()[-1]
        assert (checkout / "my data" / "progress.db").exists()
        assert status_once_up(f"http://127.0.0.1:{port}/api/downloads", server, key) == 200
    finally:
        server.terminate()
        server.wait(15)
