"""Shared fixtures. Keep each section small; helpers live in tests/origins.py and
tests/serverproc.py so bench/ scripts can use them without pytest."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

# tests/ is not an installed package: a bare `pytest` (unlike `python -m pytest`) would
# not have the repo root on sys.path, and `from tests.origins import ...` would fail.
_REPO_ROOT = str(Path(__file__).resolve().parent.parent)
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

from tests.origins import Origin  # noqa: E402

# --------------------------------------------------------------------------------------
# Origin (fault-injecting HTTP source)
# --------------------------------------------------------------------------------------


@pytest.fixture
async def origin() -> AsyncIterator[Origin]:
    async with Origin() as started:
        yield started
