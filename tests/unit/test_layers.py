"""The layers import downwards only: the app's keys and the sessions do not pull in the web
layer, so the domain can be used (and tested) without it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.serverproc import REPO_ROOT


@pytest.mark.parametrize("module", ["progress_server.appkeys", "progress_server.sessions"])
def test_module_does_not_import_the_web_layer(module: str) -> None:
    # A fresh interpreter: in this one, other tests have imported everything already.
    probe = (
        f"import sys, {module}; "
        "print(sorted(m for m in sys.modules if m.startswith('progress_server.web')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=60,
        check=True,
    )
    assert done.stdout.strip() == "[]"
