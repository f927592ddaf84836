"""The status page in a real browser (Debian's Chromium through Playwright).

The server runs in-process on a real port (pytest-aiohttp), or as a subprocess where a
restart is part of the story; downloads come from the fault-injecting origin, slowed with
`rate=` so that progress can be watched.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Literal

import pytest
from playwright.async_api import Browser, Page, WebSocketRoute, expect

from tests.apiclient import Api
from tests.conftest import MakeApi
from tests.media import HAVE_FFMPEG, make_video
from tests.origins import Origin, payload_sha256
from tests.pagekit import (
    WAIT_MS,
    artifact,
    bar_value,
    chromium,
    live_history,
    log_in,
    record_live_status,
    row,
    watch_bar,
)
from tests.serverproc import ServerProcess, create_key


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as started:
        yield started


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    context = await browser.new_context(accept_downloads=True)
    page = await context.new_page()
    yield page
    await context.close()


LOOKS: tuple[Literal["light", "dark"], ...] = ("light", "dark")


def base_url(api: Api) -> str:
    return str(api.client.make_url("/"))


async def wait_live(page: Page) -> None:
    await expect(page.locator("#live")).to_have_attribute("data-mode", "live", timeout=WAIT_MS)


async def test_login_refuses_a_bad_key_then_logs_in_and_out(api: Api, page: Page) -> None:
    response = await page.goto(base_url(api))
    assert response is not None and response.status == 200
    await expect(page.locator("#api_key")).to_be_visible()

    await page.fill("#api_key", "psk_this_is_not_a_key")
    await page.click("form.login-form button[type=submit]")
    await expect(page.get_by_role("alert")).to_contain_text("not valid")
    await expect(page.locator("#tasks")).to_have_count(0)

    await page.fill("#api_key", api.key)
    await page.click("form.login-form button[type=submit]")
    await expect(page.locator("#tasks")).to_be_visible()
    await expect(page.locator(".who-name")).to_contain_text("default")
    cookies = {c["name"]: c for c in await page.context.cookies()}
    session = cookies["progress_session"]
    assert session["httpOnly"] is True
    assert session["sameSite"] == "Strict"
    # HttpOnly: the page's own scripts cannot read it.
    assert "progress_session" not in await page.evaluate("document.cookie")
    await wait_live(page)

    await page.click("text=Log out")
    await expect(page.locator("#api_key")).to_be_visible()
    await page.reload()
    await expect(page.locator("#api_key")).to_be_visible()


async def test_add_through_the_form_and_watch_it_complete_without_reloading(
    api: Api, origin: Origin, page: Page
) -> None:
    size = 1_500_000
    await log_in(page, base_url(api), api.key)
    await wait_live(page)
    # A reload would wipe this; it must survive the whole download.
    await page.evaluate("window.__sameDocument = true")

    await page.fill("#add-url", origin.url(size=size, rate=300_000, seed=7))
    await page.fill("#add-filename", "watched.bin")
    await page.click("#add-form button[type=submit]")

    new_row = page.locator("tbody.task", has_text="watched.bin")
    await expect(new_row).to_have_count(1, timeout=WAIT_MS)
    task_id = await new_row.get_attribute("data-task-id")
    assert task_id
    values, layouts = await watch_bar(page, task_id, "completed", within=90)
    moving = [v for v in values if 0 < v < 100]
    assert len(moving) >= 2, f"the bar never moved on screen: {values}"
    assert moving == sorted(moving)
    # Changing numbers never shift the columns or the row's height.
    assert len(layouts) == 1, layouts
    assert await bar_value(page, task_id) == 100

    done = page.locator(row(page, task_id))
    await expect(done.locator('[data-field="state"]')).to_have_text("Completed")
    await expect(done.locator('[data-field="percentage"]')).to_have_text("100.0 %")
    await expect(done.locator('[data-field="size"]')).to_have_text("1.4 MiB")
    assert await page.evaluate("window.__sameDocument") is True

    # The finished file downloads from its row, and it is the origin's bytes.
    async with page.expect_download() as download_info:
        await done.get_by_role("link", name="Save file").click()
    download = await download_info.value
    assert download.suggested_filename == "watched.bin"
    saved = await download.path()
    assert hashlib.sha256(saved.read_bytes()).hexdigest() == payload_sha256(size, seed=7)


async def test_three_downloads_added_in_a_row_progress_side_by_side(
    api: Api, origin: Origin, page: Page
) -> None:
    await log_in(page, base_url(api), api.key)
    await wait_live(page)
    names = ["first.bin", "second.bin", "third.bin"]
    for seed, name in enumerate(names):
        await page.fill("#add-url", origin.url(size=1_200_000, rate=300_000, seed=seed))
        await page.fill("#add-filename", name)
        await page.click("#add-form button[type=submit]")
        await expect(page.locator("tbody.task", has_text=name)).to_have_count(1)
    # Newest first.
    shown = await page.locator('tbody.task [data-field="name"]').all_text_contents()
    assert shown == names[::-1]
    # Two at a time from one host (the default): two move together, the third waits.
    moving = page.locator('tbody.task[data-state="downloading"]')
    await expect(moving).to_have_count(2, timeout=WAIT_MS)
    waiting = page.locator('tbody.task[data-state="pending"]')
    await expect(waiting.locator('[data-field="state"]')).to_have_text("Queued")
    done = page.locator('tbody.task[data-state="completed"]')
    await expect(done).to_have_count(3, timeout=90_000)
    for name in names:
        task_row = page.locator("tbody.task", has_text=name)
        await expect(task_row.locator('[data-field="percentage"]')).to_have_text("100.0 %")


async def test_tasks_added_elsewhere_appear_and_failures_explain_themselves(
    api: Api, origin: Origin, page: Page
) -> None:
    await log_in(page, base_url(api), api.key)
    await wait_live(page)
    await expect(page.locator("#empty")).to_be_visible()

    failing = await api.submit(origin.url("/file/missing.iso", status=404))
    failed_row = page.locator(row(page, failing["task_id"]))
    await expect(failed_row).to_have_attribute("data-state", "failed", timeout=WAIT_MS)
    await expect(failed_row.locator('[data-field="state"]')).to_have_text("Failed")
    await expect(failed_row.locator('[data-field="name"]')).to_have_text("missing.iso")
    await expect(failed_row.locator('[data-field="error-type"]')).to_have_text("http_error")
    await expect(failed_row.locator('[data-field="error-message"]')).to_contain_text("404")
    await expect(failed_row.get_by_role("button", name="Retry")).to_be_visible()
    await expect(page.locator("#empty")).to_be_hidden()

    # Remove goes through the API and the row leaves without a reload.
    await failed_row.get_by_role("button", name="Remove").click()
    await expect(failed_row).to_have_count(0, timeout=WAIT_MS)
    assert await api.tasks() == []


async def test_pause_and_resume_from_the_row(api: Api, origin: Origin, page: Page) -> None:
    size = 2_000_000
    task = await api.submit(origin.url(size=size, rate=250_000, seed=3), filename="pausable.bin")
    await log_in(page, base_url(api), api.key)
    await wait_live(page)
    task_row = page.locator(row(page, task["task_id"]))
    await expect(task_row).to_have_attribute("data-state", "downloading", timeout=WAIT_MS)
    await api.wait_bytes(task["task_id"], 300_000)

    await task_row.get_by_role("button", name="Pause").click()
    await expect(task_row).to_have_attribute("data-state", "paused", timeout=WAIT_MS)
    await expect(task_row.locator('[data-field="state"]')).to_have_text("Paused")
    await expect(task_row.get_by_role("button", name="Pause")).to_be_hidden()
    await expect(task_row.locator('[data-field="speed"]')).to_have_text("—")
    held = await bar_value(page, task["task_id"])
    assert held is not None and 0 < held < 100
    assert (await api.task(task["task_id"]))["state"] == "paused"

    await task_row.get_by_role("button", name="Resume").click()
    await expect(task_row).to_have_attribute("data-state", "completed", timeout=90_000)
    final = await api.task(task["task_id"])
    assert final["state"] == "completed"
    path = api.settings.downloads_dir / final["filename"]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == payload_sha256(size, seed=3)


async def test_a_cut_socket_is_shown_and_recovers(api: Api, origin: Origin, page: Page) -> None:
    await log_in(page, base_url(api), api.key)
    await wait_live(page)
    task = await api.submit(origin.url(size=1_500_000, rate=250_000), filename="cut.bin")
    task_row = page.locator(row(page, task["task_id"]))
    await expect(task_row).to_have_attribute("data-state", "downloading", timeout=WAIT_MS)

    await record_live_status(page)
    await page.evaluate("window.progressPage.socket.close()")
    await expect(page.locator("#live")).not_to_have_attribute("data-mode", "live")
    await wait_live(page)
    history = await live_history(page)
    assert any(text.startswith("lost: Connection lost") for text in history), history

    # Events missed while the socket was down are replayed; the row still finishes.
    await expect(task_row).to_have_attribute("data-state", "completed", timeout=90_000)
    await expect(task_row.locator('[data-field="percentage"]')).to_have_text("100.0 %")


async def test_polling_takes_over_while_the_socket_cannot_connect(
    make_api: MakeApi, origin: Origin, page: Page
) -> None:
    api = await make_api()
    task = await api.submit(origin.url(size=1_500_000, rate=200_000), filename="polled.bin")
    blocked = True

    async def gate(ws: WebSocketRoute) -> None:
        if blocked:
            await ws.close(code=1011, reason="blocked by the test")
        else:
            ws.connect_to_server()

    await page.route_web_socket(re.compile(r".*/api/progress/ws$"), gate)
    polls: list[str] = []
    page.on("request", lambda r: polls.append(r.url) if "/api/progress?" in r.url else None)

    await log_in(page, base_url(api), api.key)
    live = page.locator("#live")
    await expect(live).to_have_attribute("data-mode", re.compile("lost|connecting"))
    await expect(live).to_contain_text("polling every 2 s")
    values: list[float] = []
    for _ in range(600):
        value = await bar_value(page, task["task_id"])
        if value is not None and 0 < value < 100 and (not values or value > values[-1]):
            values.append(value)
        if len(values) >= 2:
            break
        await page.wait_for_timeout(100)
    assert len(values) >= 2, f"polling never moved the bar: {values}"
    assert await live.get_attribute("data-mode") != "live"
    assert any(task["task_id"] in url for url in polls)

    blocked = False
    await expect(live).to_have_attribute("data-mode", "live", timeout=WAIT_MS)
    await expect(page.locator(row(page, task["task_id"]))).to_have_attribute(
        "data-state", "completed", timeout=90_000
    )


async def test_the_page_survives_a_server_restart(
    tmp_path: Path, origin: Origin, browser: Browser
) -> None:
    data_dir = tmp_path / "data"
    key = create_key(data_dir, "restarter")
    context = await browser.new_context()
    page = await context.new_page()
    with ServerProcess(data_dir) as server:
        await log_in(page, server.base_url + "/", key)
        await wait_live(page)
        server.stop()
        live = page.locator("#live")
        await expect(live).to_have_attribute("data-mode", re.compile("lost|connecting"))
        await expect(live).to_contain_text(
            re.compile("Connection lost|Server unreachable|Reconnecting")
        )
        server.start()
        # The session is stored, so the reconnecting page is still logged in.
        await expect(live).to_have_attribute("data-mode", "live", timeout=WAIT_MS)
        # And it is still live: a task added now appears without a reload.
        await page.fill("#add-url", origin.url(size=50_000))
        await page.click("#add-form button[type=submit]")
        new_row = page.locator("tbody.task").first
        await expect(new_row).to_have_attribute("data-state", "completed", timeout=WAIT_MS)
    await context.close()


async def test_without_javascript_the_page_renders_and_its_forms_work(
    api: Api, origin: Origin, browser: Browser
) -> None:
    failing = await api.submit(origin.url("/file/gone.bin", status=404))
    await api.wait_for(failing["task_id"], "failed")
    context = await browser.new_context(java_script_enabled=False)
    page = await context.new_page()
    await log_in(page, base_url(api), api.key)

    failed_row = page.locator(row(page, failing["task_id"]))
    await expect(failed_row.locator('[data-field="state"]')).to_have_text("Failed")
    await expect(failed_row.locator('[data-field="error-type"]')).to_have_text("http_error")
    await expect(failed_row.locator('[data-field="error-message"]')).to_be_visible()
    await expect(page.locator("#live")).to_contain_text("Reload")

    await page.fill("#add-url", origin.url(size=400_000, rate=200_000))
    await page.fill("#add-filename", "nojs.bin")
    await page.click("#add-form button[type=submit]")
    added = page.locator("tbody.task", has_text="nojs.bin")
    await expect(added).to_have_count(1)
    assert await added.locator("progress").count() == 1
    # Without a socket the page changes only on reload, and a reload shows the truth.
    for _ in range(300):
        if await added.get_attribute("data-state") == "completed":
            break
        await asyncio.sleep(0.2)
        await page.reload()
    await expect(added.locator('[data-field="state"]')).to_have_text("Completed")
    await expect(added.locator('[data-field="percentage"]')).to_have_text("100.0 %")

    await failed_row.get_by_role("button", name="Remove").click()
    await expect(page.locator(row(page, failing["task_id"]))).to_have_count(0)
    assert [t["filename"] for t in await api.tasks()] == ["nojs.bin"]
    await context.close()


async def _showcase(api: Api, origin: Origin) -> None:
    """A bit of everything: finished, running, queued, paused, failed and cancelled."""
    done = await api.submit(origin.url("/file/ubuntu-24.04.1-desktop-amd64.iso", size=900_000))
    await api.submit(
        origin.url("/file/holiday-2025-family-video-4k-remastered-final.mp4", status=404)
    )
    cancelled = await api.submit(origin.url("/file/old-backup.tar.gz", size=5_000_000, rate=1))
    await api.json("POST", f"/api/downloads/{cancelled['task_id']}/cancel")
    paused = await api.submit(origin.url("/file/dataset-part-2.csv", size=4_000_000, rate=100_000))
    await api.wait_bytes(paused["task_id"], 150_000)
    await api.json("POST", f"/api/downloads/{paused['task_id']}/pause")
    await api.wait_for(done["task_id"], "completed")
    await api.submit(origin.url("/file/podcast-episode-142.mp3", size=30_000_000, rate=900_000))
    await api.submit(origin.url("/file/kernel-6.12.tar.xz", size=30_000_000, rate=2_500_000))
    await api.submit(origin.url("/file/waiting-its-turn.zip", size=1_000_000))


async def test_screenshots_at_phone_and_desktop_width_in_light_and_dark(
    make_api: MakeApi, origin: Origin, browser: Browser
) -> None:
    # Two at once from one host, so the third waits as pending.
    api = await make_api(max_concurrent=2, max_per_host=2)
    await _showcase(api, origin)
    backgrounds: dict[int, set[str]] = {375: set(), 1440: set()}
    for (width, height), scheme in itertools.product(((375, 812), (1440, 900)), LOOKS):
        context = await browser.new_context(
            viewport={"width": width, "height": height}, color_scheme=scheme
        )
        page = await context.new_page()
        await page.goto(base_url(api))
        await page.screenshot(path=artifact(f"login-{width}-{scheme}.png"))
        await log_in(page, base_url(api), api.key)
        await wait_live(page)
        downloading = page.locator('tbody.task[data-state="downloading"]')
        await expect(downloading.first.locator('[data-field="speed"]')).not_to_have_text(
            "—", timeout=WAIT_MS
        )
        await page.screenshot(path=artifact(f"page-{width}-{scheme}.png"), full_page=True)
        # Readable at this width: nothing sticks out sideways, so no horizontal scrolling.
        overflow = await page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"{overflow}px of horizontal overflow at {width}px"
        sticking_out = await page.evaluate(
            """() => [...document.querySelectorAll('tbody.task')].flatMap((task) => {
                const edge = task.getBoundingClientRect().right;
                return [...task.querySelectorAll('button, .button, .badge')]
                    .filter((b) => b.offsetParent && b.getBoundingClientRect().right > edge + 0.5)
                    .map((b) => task.dataset.state + ': ' + b.textContent.trim());
            })"""
        )
        assert sticking_out == [], f"controls stick out of their row at {width}px"
        background = await page.evaluate("getComputedStyle(document.body).backgroundColor")
        backgrounds[width].add(background)
        await context.close()
    for width, seen in backgrounds.items():
        assert len(seen) == 2, f"dark mode looks the same as light mode at {width}px"


@pytest.mark.skipif(not HAVE_FFMPEG, reason="transcoding needs ffmpeg and ffprobe")
async def test_a_transcode_shows_processing_then_the_produced_file(
    make_api: MakeApi, tmp_path: Path, page: Page
) -> None:
    media = tmp_path / "media"
    media.mkdir()
    make_video(media / "clip.mkv", seconds=40)
    api = await make_api()
    async with Origin(media_dir=media) as origin:
        await log_in(page, base_url(api), api.key)
        await wait_live(page)
        # Every state the row passes through, however briefly.
        await page.evaluate(
            """() => {
                window.__states = [];
                window.__processing = [];
                new MutationObserver((changes) => {
                    for (const c of changes) {
                        const task = c.target.closest ? c.target.closest('tbody.task') : null;
                        if (c.type === 'attributes') window.__states.push(task.dataset.state);
                        else if (task && task.dataset.state === 'processing'
                                 && c.target.dataset.field === 'percentage') {
                            window.__processing.push(c.target.textContent);
                        }
                    }
                }).observe(document.getElementById('tasks'), {
                    subtree: true, childList: true,
                    attributes: true, attributeFilter: ['data-state'],
                });
            }"""
        )
        await page.fill("#add-url", origin.url("/media/clip.mkv"))
        await page.select_option("#add-preset", "mp4")
        await page.click("#add-form button[type=submit]")
        task_row = page.locator("tbody.task").first
        await expect(task_row).to_have_attribute("data-state", "completed", timeout=120_000)
        await expect(task_row.locator('[data-field="name"]')).to_have_text(re.compile(r"\.mp4$"))
        assert "processing" in await page.evaluate("window.__states")
        # How far the transcode got is shown while it runs.
        shown = await page.evaluate("window.__processing")
        assert any(re.fullmatch(r"\d+\.\d %", text) for text in shown), shown
        task_id = await task_row.get_attribute("data-task-id")
        record = await api.task(str(task_id))
        assert record["result"]["filename"].endswith(".mp4")
