"""A media playlist in a cluster: its entries run on any node, and the parent, which every
node follows, takes each of its steps once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.clusterkit import Cluster, running_cluster
from tests.media_site import HLS_SECONDS, MP4_SECONDS, MediaSite


@pytest.fixture
async def cluster(tmp_path: Path, pg_url: str) -> AsyncIterator[Cluster]:
    # Media comes from 127.0.0.1 and 127.0.0.2: loopback, which the nodes must allow.
    async with running_cluster(tmp_path, pg_url, extra_args=["--max-concurrent", "1"]) as started:
        yield started


async def test_a_playlists_entries_run_anywhere_and_its_parent_completes_once(
    cluster: Cluster, site: MediaSite
) -> None:
    a, b, c = cluster.nodes
    parent = await a.submit(site.url("/page/two.html"), source="media")
    done = await c.wait_for(parent["task_id"], "completed", within=240)
    assert done["result"]["duration_seconds"] == MP4_SECONDS + HLS_SECONDS
    assert done["progress"]["percentage"] == 100.0
    entries = [await b.task(entry_id) for entry_id in done["entries"]]
    assert [e["state"] for e in entries] == ["completed", "completed"]
    assert {e["parent_id"] for e in entries} == {parent["task_id"]}
    for e in entries:
        assert (cluster.downloads / e["filename"]).is_file()

    history = [e for e in await b.events() if e["task_id"] == parent["task_id"]]
    names = [e["event"] for e in history]
    # Every node followed the entries; each step of the parent is stored once.
    assert names.count("download.completed") == 1, names
    assert names.count("download.processing") == 1, names
    # Its own run's start, then the start that lists its entries, as on one server.
    assert names[:3] == ["download.queued", "download.started", "download.started"], names
    assert next(e for e in history if "entries" in e)["entries"] == done["entries"]
    records = [await node.task(parent["task_id"]) for node in cluster.nodes]
    assert {r["state"] for r in records} == {"completed"}
