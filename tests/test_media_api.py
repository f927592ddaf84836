"""Media sources over the API of an in-process server: the POST fields and their 422s, the
server without yt-dlp, and what the user's actions on a playlist's parent do to its entries.

The local video site (tests/media_site.py) serves the pages; the worker processes are real.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
from click.testing import CliRunner

from progress_server.cli import main
from progress_server.client import ProgressClient
from progress_server.media import source
from progress_server.models import TASK_RECORD_LIVE_KEYS, TASK_RECORD_MEDIA_KEYS
from tests.apiclient import Api, assert_error, eventually
from tests.conftest import MakeApi
from tests.media_site import MP4_SECONDS, MediaSite, descendants

pytestmark = pytest.mark.timeout(240)

JSON = dict[str, Any]


@pytest.fixture
def fresh_sources() -> Iterator[None]:
    source.media_available.cache_clear()
    source.format_problem.cache_clear()
    yield
    source.media_available.cache_clear()
    source.format_problem.cache_clear()


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"source": "ftp"}, "'source' must be one of auto, http, media"),
        ({"source": 1}, "'source' must be one of"),
        ({"format": 5}, "'format' must be a string"),
        ({"format": ""}, "'format' must be a yt-dlp format selector of 1 to 500"),
        ({"format": "b" * 501}, "of 1 to 500 characters"),
        ({"format": "best\n"}, "control characters"),
        ({"format": "bv*+"}, "'format' is not a yt-dlp format selector"),
        ({"format": "best[height<=tall]"}, "'format' is not a yt-dlp format selector"),
        ({"playlist": "yes"}, "'playlist' must be true or false"),
        ({"source": "http", "format": "b"}, "apply to media sources"),
        ({"source": "http", "playlist": False}, "apply to media sources"),
    ],
)
async def test_bad_media_fields_are_422_and_store_nothing(
    api: Api, fields: JSON, says: str
) -> None:
    resp = await api.call("POST", "/api/downloads", json={"url": "http://127.0.0.1:9/v", **fields})

    assert resp.status == 422
    body = await resp.json()
    assert_error(body, "validation_error")
    assert says in body["error"]["message"]
    assert await api.tasks() == []


async def test_only_media_tasks_carry_media_keys(api: Api, site: MediaSite) -> None:
    plain = await api.submit(site.url("/media/clip.mp4"))
    manifest = await api.submit(site.url("/media/hls/index.m3u8"), source=None)
    forced = await api.submit(site.url("/media/hls/index.m3u8"), source="http")
    chosen = await api.submit(site.url("/page/one.html"), format="ba/b", playlist=False)

    assert not set(TASK_RECORD_MEDIA_KEYS) & set(plain)
    assert not set(TASK_RECORD_MEDIA_KEYS) & set(forced)
    assert manifest["source"] == "media"
    # A format selector only means something to yt-dlp: with "auto" it asks for media.
    assert chosen["source"] == "media"
    assert chosen["options"] == {"format": "ba/b", "playlist": False}
    for task in (plain, manifest, forced, chosen):
        # (A download under way also shows its live `connections`, media or not.)
        live = set(TASK_RECORD_LIVE_KEYS)
        assert (await api.task(task["task_id"])).keys() - live == task.keys()


async def test_without_yt_dlp_media_is_refused_and_said_once_at_start(
    make_api: MakeApi,
    site: MediaSite,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    fresh_sources: None,
) -> None:
    # None in sys.modules is how Python spells "this module cannot be imported".
    monkeypatch.setitem(sys.modules, "yt_dlp", None)
    with caplog.at_level(logging.WARNING):
        api = await make_api()

    warned = [r for r in caplog.records if r.getMessage() == source.MISSING_MESSAGE]
    assert len(warned) == 1
    for fields in ({"source": "media"}, {"format": "b"}):
        resp = await api.call(
            "POST", "/api/downloads", json={"url": site.url("/page/one.html"), **fields}
        )
        assert resp.status == 422
        assert (await resp.json())["error"]["message"] == source.MISSING_MESSAGE
    # "auto" falls back to a plain download, as before media sources existed.
    manifest = await api.submit(site.url("/media/hls/index.m3u8"))
    assert "source" not in manifest


async def playlist_running(api: Api, url: str) -> tuple[JSON, list[str]]:
    """A playlist task, once its entries exist and its second entry has some bytes."""
    parent = await api.submit(url, source="media")
    found: list[str] = []

    async def expanded() -> bool:
        nonlocal found
        found = (await api.task(parent["task_id"])).get("entries") or []
        return bool(found)

    await eventually(expanded, 120)
    await api.wait_bytes(found[1], 50_000)
    return await api.task(parent["task_id"]), found


async def test_cancelling_a_playlist_cancels_its_unfinished_entries(
    api: Api, site: MediaSite
) -> None:
    parent, entries = await playlist_running(api, site.url("/page/two.html", rate=40_000))
    first = await api.wait_for(entries[0], "completed")

    cancelled = await api.json("POST", f"/api/downloads/{parent['task_id']}/cancel")

    assert cancelled["state"] == "cancelled"
    assert cancelled["entries"] == entries
    assert (await api.task(entries[0]))["state"] == first["state"] == "completed"
    assert (await api.task(entries[1]))["state"] == "cancelled"
    assert descendants() == []
    await api.json("POST", f"/api/downloads/{parent['task_id']}/cancel")
    # Retried, the parent follows its entry back to work, and on to the end.
    await api.json("POST", f"/api/downloads/{parent['task_id']}/retry")
    done = await api.wait_for(parent["task_id"], "completed", within=180)
    assert done["result"]["entries"] == 2
    names = [e["event"] for e in await api.events(parent["task_id"])]
    assert names[-4:] == [
        "download.queued",
        "download.started",
        "download.processing",
        "download.completed",
    ]


async def test_pause_and_resume_of_a_playlist_act_on_its_entries(api: Api, site: MediaSite) -> None:
    parent, entries = await playlist_running(api, site.url("/page/two.html", rate=40_000))

    paused = await api.json("POST", f"/api/downloads/{parent['task_id']}/pause")
    assert paused["state"] == "paused"
    states = {(await api.task(e))["state"] for e in entries}
    assert states <= {"paused", "completed"} and "paused" in states
    assert descendants() == []

    resumed = await api.json("POST", f"/api/downloads/{parent['task_id']}/resume")
    assert resumed["state"] in ("pending", "downloading")
    await api.wait_for(parent["task_id"], "completed", within=180)


async def test_an_entry_that_fails_for_good_fails_its_playlist(api: Api, site: MediaSite) -> None:
    url = site.url("/page/vanishing.html")
    parent = await api.submit(url, source="media")

    failed = await api.wait_for(parent["task_id"], "failed", within=120)

    entries = [await api.task(e) for e in failed["entries"]]
    assert len(entries) == 2
    gone = [e for e in entries if e["state"] == "failed"]
    assert gone and all(e["error"]["type"] == "extract_error" for e in gone)
    assert failed["error"]["type"] == "extract_error"
    # It names the entry that failed first.
    named = next(e for e in gone if e["task_id"] == failed["error"]["entry"])
    assert failed["error"]["message"] == (
        f"entry {named['playlist_index']} of 2 failed: Unsupported URL: {url}"
    )
    assert [e["event"] for e in await api.events(parent["task_id"])].count("download.error") == 1


async def test_deleting_a_playlist_deletes_its_entries_and_their_files(
    api: Api, site: MediaSite
) -> None:
    parent = await api.submit(site.url("/page/two.html"), source="media")
    done = await api.wait_for(parent["task_id"], "completed", within=180)
    files = [api.settings.downloads_dir / (await api.task(e))["filename"] for e in done["entries"]]
    assert all(f.is_file() for f in files)

    await api.json("DELETE", f"/api/downloads/{parent['task_id']}?delete_file=true", 204)

    assert await api.tasks() == []
    assert not any(f.exists() for f in files)
    assert list(api.settings.downloads_dir.iterdir()) == []


async def test_deleting_one_entry_leaves_the_playlist_with_the_others(
    api: Api, site: MediaSite
) -> None:
    parent = await api.submit(site.url("/page/two.html"), source="media")
    done = await api.wait_for(parent["task_id"], "completed", within=180)

    await api.json("DELETE", f"/api/downloads/{done['entries'][0]}", 204)

    assert (await api.task(parent["task_id"]))["entries"] == done["entries"][1:]


async def test_the_task_s_speed_limit_holds_its_worker(api: Api, site: MediaSite) -> None:
    limit_mbps = 0.25
    task = await api.submit(site.url("/media/hls/index.m3u8"), max_speed_mbps=limit_mbps)

    done = await api.wait_for(task["task_id"], "completed", within=120)

    events = await api.events(task["task_id"])
    started = next(e for e in events if e["event"] == "download.started")
    processing = next(e for e in events if e["event"] == "download.processing")
    seconds = _seconds_between(started["timestamp"], processing["timestamp"])
    size = done["result"]["size_mb"] * 2**20
    # ~0.8 MB at 0.25 MB/s: over 3 s, where the local site alone takes a fraction of one.
    assert seconds >= 0.9 * size / (limit_mbps * 1e6)


def _seconds_between(earlier: str, later: str) -> float:
    def parse(stamp: str) -> datetime:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00"))

    return (parse(later) - parse(earlier)).total_seconds()


async def test_deny_private_networks_covers_the_fragments_of_a_media_task(
    make_api: MakeApi, site: MediaSite
) -> None:
    # Only 127.0.0.1 is allowed; the manifest's fragments live on 127.0.0.2.
    api = await make_api(deny_private_networks=True, allow_networks=("127.0.0.1/32",))
    task = await api.submit(site.url("/elsewhere/hls/index.m3u8"))

    failed = await api.wait_for(task["task_id"], "failed", within=120)

    assert failed["error"]["type"] == "invalid_url"
    assert "127.0.0.2" in failed["error"]["message"]
    assert site.hits_on("127.0.0.2") == []


async def test_the_command_line_and_the_client_pass_the_media_fields(
    make_api: MakeApi, site: MediaSite
) -> None:
    api = await make_api()
    env = {
        "PROGRESS_SERVER_URL": str(api.client.make_url("")).rstrip("/"),
        "PROGRESS_SERVER_API_KEY": api.key,
    }
    # The CLI runs its own event loop: in a thread, beside the site's.
    added = await asyncio.to_thread(
        CliRunner().invoke,
        main,
        ["add", site.url("/page/two.html"), "--source", "media", "--format", "ba/b",
         "--no-playlist", "--wait", "--json"],
        env=env,
    )  # fmt: skip
    assert added.exit_code == 0, added.output
    [record] = json.loads(added.stdout)
    assert record["state"] == "completed" and record["source"] == "media"
    assert record["options"] == {"format": "ba/b", "playlist": False}
    # Only the page's first video, not a playlist of both.
    assert "entries" not in record and record["result"]["duration_seconds"] == MP4_SECONDS

    refused = await asyncio.to_thread(
        CliRunner().invoke, main, ["add", site.url("/x.m3u8"), "--format", "bv*+"], env=env
    )
    assert refused.exit_code != 0
    assert "not a yt-dlp format selector" in refused.output

    async with ProgressClient(env["PROGRESS_SERVER_URL"], api.key) as client:
        task = await client.create(site.url("/media/clip.mp4"), source="http")
        assert "source" not in task
        task = await client.create(site.url("/media/hls/index.m3u8"), format="ba/b")
        assert task["source"] == "media" and task["options"] == {"format": "ba/b"}


async def test_a_playlist_s_progress_combines_its_entries_and_never_goes_back(
    api: Api, site: MediaSite
) -> None:
    parent = await api.submit(site.url("/page/two.html", rate=150_000), source="media")
    shown: list[float] = []
    polled: JSON = {}

    async def finished() -> bool:
        nonlocal polled
        polled = await api.progress(parent["task_id"])
        percentage = polled["progress"]["percentage"]
        if percentage is not None and polled["state"] == "downloading":
            shown.append(percentage)
        state: str = polled["state"]
        return state == "completed"

    await eventually(finished, 180, lambda: f"not completed: {polled}")

    moving = [p for p in shown if 0 < p < 100]
    assert len(set(moving)) >= 3, shown
    assert shown == sorted(shown), shown
    done = await api.task(parent["task_id"])
    entries = [await api.task(e) for e in done["entries"]]
    assert done["progress"]["percentage"] == 100.0
    assert done["progress"]["downloaded_bytes"] == sum(
        e["progress"]["downloaded_bytes"] for e in entries
    )
