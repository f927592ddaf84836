"""The status page's quality choice in a real browser (Debian's Chromium via Playwright):
each choice is a yt-dlp format selector that makes the task a media one, with JavaScript
(the REST API) and without (the form post).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Browser, Page, expect

from progress_server.media.job import QUALITY_FORMATS
from tests.apiclient import Api
from tests.media import codecs, duration
from tests.media_site import HLS_SECONDS, MediaSite
from tests.pagekit import WAIT_MS, chromium, log_in, row

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as started:
        yield started


def base_url(api: Api) -> str:
    return str(api.client.make_url("/"))


async def add_with_quality(page: Page, url: str, label: str) -> None:
    await page.fill("#add-url", url)
    await page.select_option("#add-format", label=label)
    await page.click("#add-form button[type=submit]")


async def test_the_quality_choices_are_the_page_s_selectors(api: Api, browser: Browser) -> None:
    page = await browser.new_page()
    await log_in(page, base_url(api), api.key)

    options = page.locator("#add-format option")
    labels = await options.all_text_contents()
    values = [await options.nth(i).get_attribute("value") for i in range(len(labels))]

    assert labels == [
        "Auto (file or video)",
        "Best video",
        "Video up to 1080p",
        "Video up to 720p",
        "Audio only",
    ]
    assert values == ["", *(QUALITY_FORMATS[q] for q in ("best", "1080p", "720p", "audio"))]


async def test_audio_only_from_the_page_downloads_only_the_audio(
    api: Api, browser: Browser, site: MediaSite
) -> None:
    page = await browser.new_page()
    await log_in(page, base_url(api), api.key)

    # Separate video and audio renditions: "Audio only" must take the audio alone.
    await add_with_quality(page, site.url("/media/split/master.m3u8"), "Audio only")

    added = page.locator("tbody.task").first
    await expect(added).to_have_attribute("data-state", "completed", timeout=WAIT_MS * 4)
    task_id = await added.get_attribute("data-task-id")
    assert task_id
    task = await api.task(task_id)
    assert task["source"] == "media"
    assert task["options"] == {"format": QUALITY_FORMATS["audio"]}
    path = api.settings.downloads_dir / task["filename"]
    assert codecs(path) == {"audio": "aac"}
    assert duration(path) == pytest.approx(HLS_SECONDS, abs=0.5)
    await expect(added.locator('[data-field="name"]')).to_have_text(task["filename"])


async def test_without_javascript_the_form_posts_the_quality_too(
    api: Api, browser: Browser, site: MediaSite
) -> None:
    context = await browser.new_context(java_script_enabled=False)
    page = await context.new_page()
    await log_in(page, base_url(api), api.key)

    # A page with a <video>: "auto" alone would fetch its HTML; a quality asks for media.
    await add_with_quality(page, site.url("/page/one.html"), "Video up to 720p")

    tasks = await api.tasks()
    assert len(tasks) == 1
    assert tasks[0]["source"] == "media"
    assert tasks[0]["options"] == {"format": QUALITY_FORMATS["720p"]}
    done = await api.wait_for(tasks[0]["task_id"], "completed", within=180)
    assert codecs(api.settings.downloads_dir / done["filename"]) == {
        "video": "h264",
        "audio": "aac",
    }
    await page.reload()
    await expect(page.locator("tbody.task").first).to_have_attribute("data-state", "completed")
    await context.close()


async def test_a_playlist_row_offers_no_file_and_its_entries_do(
    api: Api, browser: Browser, site: MediaSite
) -> None:
    page = await browser.new_page()
    await log_in(page, base_url(api), api.key)
    parent = await api.submit(site.url("/page/two.html"), source="media")
    done = await api.wait_for(parent["task_id"], "completed", within=180)

    for reload in (False, True):  # live from the socket, then as the server renders it
        if reload:
            await page.reload()
        parent_row = page.locator(row(page, parent["task_id"]))
        await expect(parent_row).to_have_attribute("data-state", "completed", timeout=WAIT_MS)
        await expect(parent_row.locator(".act-file")).to_be_hidden()
        await expect(parent_row.locator('[data-field="name"]')).to_have_text("Two Clips")
        for entry_id in done["entries"]:
            entry_row = page.locator(row(page, entry_id))
            await expect(entry_row).to_have_attribute("data-state", "completed")
            await expect(entry_row.locator(".act-file")).to_be_visible()
