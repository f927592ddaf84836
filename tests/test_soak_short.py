"""The short crash soak (3 SIGKILLs, 5 files): nothing lost, every history in order."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.serverproc import REPO_ROOT


@pytest.mark.timeout(420)
def test_short_soak_loses_nothing(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "bench" / "soak.py"),
            "--kills",
            "3",
            "--files",
            "5",
            "--max-mb",
            "8",
            "--data-dir",
            str(tmp_path),
            "--timeout",
            "240",
        ],
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    report = proc.stdout + proc.stderr
    assert proc.returncode == 0, report
    assert "kills survived 3/3, files right 5/5, tasks completed 5/5" in proc.stdout, report
