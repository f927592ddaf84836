"""What a person sees of a split download: the record's and the progress events' *extra*
`connections` and `segments`, `progress-server show`'s multi-part bar, and the page's strip
in Chromium (Debian's, through Playwright)."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from typing import Any

from click.testing import CliRunner
from playwright.async_api import expect

from progress_server.cli import main
from tests.apiclient import JSON, Api
from tests.conftest import MakeApi
from tests.enginekit import FAST_RETRIES
from tests.origins import Origin
from tests.pagekit import WAIT_MS, artifact, chromium, log_in, row
from tests.wsclient import WS_PATH, is_final_event, recv_until

SIZE = 4_000_000
GUIDE_PROGRESS_KEYS = {"event", "task_id", "progress", "timestamp", "seq", "state"}
# Four parts of a million bytes, each connection held to 250 kB/s: 16 s on one, 4 s split.
SPLIT: dict[str, Any] = {"segments": 4, "min_segment_size": 500_000, **FAST_RETRIES}


def assert_tiles(segments: list[list[int]], total: int) -> None:
    """The parts cover the file in order, each with no more done than it holds."""
    assert segments[0][0] == 0 and segments[-1][1] == total, segments
    for (_, end, _), (start, _, _) in itertools.pairwise(segments):
        assert start == end, segments
    for start, end, done in segments:
        assert start < end and 0 <= done <= end - start, segments


async def split_record(api: Api, task_id: str, within: float = 30) -> JSON:
    """The task's record once it shows a split download under way."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        record = await api.task(task_id)
        if len(record.get("segments", [])) >= 2 and record["state"] == "downloading":
            return record
        await asyncio.sleep(0.05)
    raise AssertionError(f"no split shown within {within}s: {record}")


async def test_record_and_events_show_connections_and_segments(
    make_api: MakeApi, origin: Origin
) -> None:
    api = await make_api(**SPLIT)
    ws = await api.client.ws_connect(WS_PATH, headers={"Authorization": f"Bearer {api.key}"})
    url = origin.url("/file/view.bin", size=SIZE, seed=5, conn_rate=250_000)
    task = await api.submit(url)
    task_id = task["task_id"]
    await ws.send_str(json.dumps({"action": "subscribe", "task_id": task_id}))

    record = await split_record(api, task_id)
    assert 2 <= record["connections"] <= 4
    assert_tiles(record["segments"], SIZE)

    # `show` draws the parts as one thin bar, every part where it lies in the file.
    shown = await asyncio.to_thread(
        CliRunner().invoke,
        main,
        ["show", task_id],
        env={
            "PROGRESS_SERVER_URL": str(api.client.make_url("/")),
            "PROGRESS_SERVER_API_KEY": api.key,
        },
    )
    assert shown.exit_code == 0, shown.output
    lines = [x for x in shown.stdout.splitlines() if x.startswith("Segments")]
    assert lines, shown.stdout
    assert "▕" in lines[0] and "parts" in lines[0] and "connections open" in lines[0]

    frames = await recv_until(ws, is_final_event(task_id), within=60)
    progress = [f for f in frames if f.get("event") == "download.progress"]
    split = [f for f in progress if "segments" in f]
    assert split, progress
    for frame in split:
        assert_tiles(frame["segments"], SIZE)
        assert 1 <= frame["connections"] <= 4
        done = sum(d for _, _, d in frame["segments"])
        # The parts and the figures are read in one moment: the same bytes.
        assert abs(done - frame["progress"]["downloaded_bytes"]) <= 256 * 1024, frame
    # Parts fill as their connections go: some frame shows several parts half done at once.
    assert any(sum(0 < d < e - s for s, e, d in f["segments"]) >= 2 for f in split)
    await ws.close()

    # Over: nothing is open, and the record says nothing about connections or parts.
    done_record = await api.wait_for(task_id, "completed")
    assert "connections" not in done_record and "segments" not in done_record


async def test_one_connection_shows_connections_but_no_parts(
    make_api: MakeApi, origin: Origin
) -> None:
    api = await make_api(segments=1)
    ws = await api.client.ws_connect(WS_PATH, headers={"Authorization": f"Bearer {api.key}"})
    task = await api.submit(origin.url("/file/one.bin", size=SIZE, seed=6, rate=2_000_000))
    await ws.send_str(json.dumps({"action": "subscribe", "task_id": task["task_id"]}))
    await api.wait_bytes(task["task_id"], 300_000)
    record = await api.task(task["task_id"])
    assert record["connections"] == 1 and "segments" not in record
    # Its progress events keep the guide's exact shape: nothing to draw in parts.
    frames = await recv_until(ws, is_final_event(task["task_id"]), within=60)
    progress = [f for f in frames if f.get("event") == "download.progress"]
    assert progress and all(f.keys() == GUIDE_PROGRESS_KEYS for f in progress), progress
    await ws.close()


async def test_the_page_draws_the_parts_under_the_bar(make_api: MakeApi, origin: Origin) -> None:
    api = await make_api(**SPLIT)
    url = origin.url("/file/page.bin", size=SIZE, seed=7, conn_rate=250_000)
    task = await api.submit(url)
    task_id = task["task_id"]
    async with chromium() as browser:
        page = await browser.new_page()
        await log_in(page, str(api.client.make_url("/")), api.key)
        strip = page.locator(f'{row(page, task_id)} [data-field="segments"]')
        await expect(strip).to_be_visible(timeout=WAIT_MS)
        await page.wait_for_function(
            "(sel) => document.querySelectorAll(sel + ' > span').length >= 2",
            arg=f'{row(page, task_id)} [data-field="segments"]',
            timeout=WAIT_MS,
        )
        boxes = await strip.evaluate(
            """(el) => {
                const whole = el.getBoundingClientRect();
                return [...el.children].map((part) => {
                    const box = part.getBoundingClientRect();
                    const fill = part.firstChild.getBoundingClientRect();
                    return [box.left - whole.left, box.width, fill.width, whole.width];
                });
            }"""
        )
        # The parts sit side by side across the whole bar, each filled no further than
        # it is wide, and the strip is as wide as the bar above it.
        lefts = [left for left, *_ in boxes]
        assert lefts == sorted(lefts) and lefts[0] < 1
        assert abs(sum(width for _, width, _, _ in boxes) - boxes[0][3]) < 2
        assert all(fill <= width + 0.5 for _, width, fill, _ in boxes)
        bar_width = await page.locator(f"{row(page, task_id)} progress").evaluate(
            "(el) => el.getBoundingClientRect().width"
        )
        assert abs(bar_width - boxes[0][3]) < 1
        await page.screenshot(path=str(artifact("segments-desktop.png")))

        # Once the download is over, the strip goes; the bar alone says 100 %.
        task_row = page.locator(row(page, task_id))
        await expect(task_row).to_have_attribute("data-state", "completed", timeout=60_000)
        await expect(strip).to_be_hidden()
