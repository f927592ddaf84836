"""Shared fixtures. Keep each section small; helpers live in tests/origins.py and
tests/serverproc.py so bench/ scripts can use them without pytest."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Protocol

import pytest
from pytest_aiohttp import AiohttpClient

# tests/ is not an installed package: a bare `pytest` (unlike `python -m pytest`) would
# not have the repo root on sys.path, and `from tests.origins import ...` would fail.
_REPO_ROOT = str(Path(__file__).resolve().parent.parent)
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

from progress_server.app import create_app  # noqa: E402
from progress_server.settings import Settings  # noqa: E402
from tests.apiclient import Api  # noqa: E402
from tests.media import library  # noqa: E402
from tests.media_site import MediaSite, make_streams  # noqa: E402
from tests.origins import Origin  # noqa: E402

# PostgreSQL fixtures (pg_server, pg_url, pg_empty_url) for the cluster-mode tests.
pytest_plugins = ["tests.pgserver"]

# --------------------------------------------------------------------------------------
# Origin (fault-injecting HTTP source)
# --------------------------------------------------------------------------------------


@pytest.fixture
async def origin() -> AsyncIterator[Origin]:
    async with Origin() as started:
        yield started


# --------------------------------------------------------------------------------------
# In-process server over real HTTP (tests/apiclient.py): `make_api(**settings)` or `api`
# --------------------------------------------------------------------------------------


class MakeApi(Protocol):
    """`await make_api(**overrides)`: an `Api` on a fresh app; overrides are `Settings` fields."""

    async def __call__(self, **overrides: Any) -> Api: ...


@pytest.fixture
def make_api(aiohttp_client: AiohttpClient, tmp_path: Path) -> MakeApi:
    """Start `create_app(Settings(data_dir=tmp_path/"data", **overrides))`, with one key."""

    async def make(**overrides: Any) -> Api:
        overrides.setdefault("min_free_bytes", 0)
        settings = Settings(data_dir=tmp_path / "data", **overrides)
        api = Api(await aiohttp_client(create_app(settings)), settings)
        api.key = await api.new_key("default")
        return api

    return make


@pytest.fixture
async def api(make_api: MakeApi) -> Api:
    return await make_api()


# -- media (real files made with ffmpeg once per session folder) -------------------------


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return library(tmp_path_factory.getbasetemp() / "media")


@pytest.fixture
async def media_origin(media_dir: Path) -> AsyncIterator[Origin]:
    async with Origin(media_dir=media_dir) as started:
        yield started


# -- media sources: a local video site with HLS streams made by ffmpeg (tests/media_site.py)


@pytest.fixture(scope="session")
def streams(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_streams(tmp_path_factory.getbasetemp() / "media-site")


@pytest.fixture
async def site(streams: Path) -> AsyncIterator[MediaSite]:
    async with MediaSite(streams) as started:
        yield started
