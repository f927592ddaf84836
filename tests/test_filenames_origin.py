"""File names chosen from what a real origin sends, hostile ones included."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import pytest
from aiohttp import web

from tests.apiclient import Api
from tests.conftest import MakeApi
from tests.enginekit import TinyOrigin, downloaded, sha256_file
from tests.origins import Origin, payload_sha256


def _only_plain_files(directory: Path) -> list[str]:
    names = sorted(p.name for p in directory.iterdir())
    assert all((directory / n).is_file() for n in names), names
    return names


@pytest.mark.parametrize(
    ("disposition", "expected"),
    [
        ('attachment; filename="../../etc/passwd"', "passwd"),
        ('attachment; filename="/etc/shadow"', "shadow"),
        ('attachment; filename="..\\\\..\\\\windows\\\\win.ini"', "win.ini"),
        ('attachment; filename="C:\\\\evil.exe"', "evil.exe"),
        ("attachment; filename*=UTF-8''..%2F..%2Froot%2F.bashrc", "bashrc"),
        ("attachment; filename*=UTF-8''nul%00byte.txt", "nul_byte.txt"),
        ('attachment; filename=".hidden"', "hidden"),
        ("attachment; filename*=UTF-8''a%0D%0Ab.txt", "a__b.txt"),
        ('attachment; filename="..."', "file"),  # nothing left: the URL path decides
        ("attachment; filename*=UTF-8''na%C3%AFve%20caf%C3%A9.txt", "naïve café.txt"),
        # RFC 6266: filename* wins over the plain fallback.
        ("attachment; filename=\"plain.txt\"; filename*=UTF-8''%E2%82%AC.txt", "€.txt"),
        ("attachment; filename=report.pdf", "report.pdf"),
    ],
)
async def test_hostile_dispositions_land_inside_the_downloads_folder(
    make_api: MakeApi, origin: Origin, disposition: str, expected: str
) -> None:
    api = await make_api()
    task = await api.submit(origin.url("/file", size=1000, seed=1, disposition=disposition))
    done = await api.wait_for(task["task_id"], "completed")
    assert done["filename"] == expected
    assert done["result"]["filename"] == expected
    assert sha256_file(downloaded(api, done)) == payload_sha256(1000, 1)
    assert _only_plain_files(api.settings.downloads_dir) == [expected]


async def test_very_long_names_are_shortened(make_api: MakeApi, origin: Origin) -> None:
    api = await make_api()
    long_name = "é" * 400 + ".tar.gz"
    disposition = f"attachment; filename*=UTF-8''{quote(long_name)}"
    first = await api.submit(origin.url("/file", size=1000, disposition=disposition))
    second = await api.submit(origin.url("/file", size=1000, disposition=disposition))
    names = [(await api.wait_for(t["task_id"], "completed"))["filename"] for t in (first, second)]
    for name in names:
        assert len(name.encode()) <= 255
        assert name.endswith(".gz")
    assert len(set(names)) == 2
    assert sorted(_only_plain_files(api.settings.downloads_dir)) == sorted(names)


async def test_collisions_get_numbered(make_api: MakeApi, origin: Origin) -> None:
    api = await make_api(max_concurrent=1)
    ids = [
        (await api.submit(origin.url("/file/same.tar.gz", size=1000, seed=i)))["task_id"]
        for i in range(3)
    ]
    done = [await api.wait_for(task_id, "completed") for task_id in ids]
    assert [d["filename"] for d in done] == ["same.tar.gz", "same.tar (1).gz", "same.tar (2).gz"]
    for i, d in enumerate(done):
        assert sha256_file(downloaded(api, d)) == payload_sha256(1000, i)


async def test_name_sources_in_order(make_api: MakeApi, origin: Origin) -> None:
    api: Api = await make_api()
    cd = 'attachment; filename="from-header.bin"'
    given = await api.submit(origin.url("/file/from-url.bin", disposition=cd), filename="mine.bin")
    header = await api.submit(origin.url("/file/from-url.bin", size=10, disposition=cd))
    path = await api.submit(origin.url("/file/from url.bin", size=10))
    names = [
        (await api.wait_for(t["task_id"], "completed"))["filename"] for t in (given, header, path)
    ]
    assert names == ["mine.bin", "from-header.bin", "from url.bin"]


async def test_no_name_anywhere_uses_the_task_id(make_api: MakeApi) -> None:
    api = await make_api()

    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=b"x" * 100)

    async with TinyOrigin(handler) as tiny:
        task = await api.submit(tiny.url("/"))
        done = await api.wait_for(task["task_id"], "completed")
    assert done["filename"] == task["task_id"]
    assert downloaded(api, done).read_bytes() == b"x" * 100
