"""The status page shows a retried attempt as retrying, with its reason, and the task as
failed only once it is (#11)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Browser, Page, expect

from tests.conftest import MakeApi
from tests.pagekit import WAIT_MS, chromium, log_in, row
from tests.serverproc import free_port


@pytest.fixture
async def page() -> AsyncIterator[Page]:
    browser: Browser
    async with chromium() as browser:
        context = await browser.new_context()
        yield await context.new_page()
        await context.close()


# A file, and a manifest (auto: a media task, whose attempts are runs of the yt-dlp worker).
@pytest.mark.parametrize("path", ["closed.bin", "closed.m3u8"], ids=["file", "media"])
async def test_a_retried_attempt_reads_retrying_then_failed(
    make_api: MakeApi, page: Page, path: str
) -> None:
    api = await make_api(max_retries=2, retry_base_delay=1.5, retry_max_delay=1.5)
    await log_in(page, str(api.client.make_url("/")), api.key)
    await expect(page.locator("#live")).to_have_attribute("data-mode", "live", timeout=WAIT_MS)
    task = await api.submit(f"http://127.0.0.1:{free_port()}/{path}")
    assert task.get("source", "http") == ("media" if path.endswith(".m3u8") else "http")
    selector = row(page, task["task_id"])

    state = page.locator(f"{selector} [data-field=state]")
    await expect(state).to_have_text("Retrying", timeout=WAIT_MS)
    detail = page.locator(f"{selector} tr.detail")
    await expect(detail).to_be_visible()
    await expect(detail).to_contain_text("network_error")
    await expect(detail).to_contain_text("attempt 1 failed")
    await expect(page.locator(selector)).to_have_attribute("data-state", "downloading")

    await expect(page.locator(selector)).to_have_attribute("data-state", "failed", timeout=WAIT_MS)
    await expect(state).to_have_text("Failed")
    await expect(detail).to_contain_text("network_error")
    await expect(detail).not_to_contain_text("attempt")
