"""Page and CLI read sizes and speeds in one unit family, binary with `MiB`, as the API's
`size_mb` is; `show` never prints decimal and binary units side by side (#11)."""

from __future__ import annotations

import asyncio
import re

from click.testing import CliRunner
from playwright.async_api import expect

from progress_server.cli import main
from tests.apiclient import Api
from tests.origins import Origin
from tests.pagekit import WAIT_MS, chromium, log_in, row

DECIMAL = re.compile(r"\d (kB|MB|GB|TB)\b")
SIZE = 1_500_000  # 1.4 MiB, 1.5 MB


async def cli(api: Api, *args: str) -> str:
    env = {
        "PROGRESS_SERVER_URL": str(api.client.make_url("")).rstrip("/"),
        "PROGRESS_SERVER_API_KEY": api.key,
    }
    result = await asyncio.to_thread(CliRunner().invoke, main, list(args), env=env)
    assert result.exit_code == 0, result.output
    return result.stdout


async def test_show_and_ls_read_mib_only(api: Api, origin: Origin) -> None:
    task = await api.submit(origin.url("/file/one.bin", size=SIZE))
    done = await api.wait_for(task["task_id"], "completed")
    assert done["result"]["size_mb"] == 1.43
    shown = await cli(api, "show", task["task_id"])
    assert "1.4 MiB" in shown
    assert "1.43 MiB" in shown  # the result's size_mb, in its own unit
    assert not DECIMAL.search(shown), shown
    listed = await cli(api, "ls")
    assert "1.4 MiB" in listed and not DECIMAL.search(listed), listed


async def test_the_page_reads_mib_with_and_without_javascript(api: Api, origin: Origin) -> None:
    finished = await api.submit(origin.url("/file/done.bin", size=SIZE))
    await api.wait_for(finished["task_id"], "completed")
    slow = await api.submit(origin.url("/file/slow.bin", size=20_000_000, rate=400_000))
    # Past 1 MiB before the page loads, so the row's pair reads "N MiB / 19.1 MiB" (below it,
    # the same row rightly reads KiB; a loaded machine once rendered 960.0 KiB here).
    await api.wait_bytes(slow["task_id"], 1_300_000)
    base = str(api.client.make_url("/"))
    async with chromium() as browser:
        for javascript in (False, True):
            context = await browser.new_context(java_script_enabled=javascript)
            page = await context.new_page()
            await log_in(page, base, api.key)
            done = page.locator(row(page, finished["task_id"]))
            await expect(done.locator('[data-field="size"]')).to_have_text("1.4 MiB")
            moving = page.locator(row(page, slow["task_id"]))
            await expect(moving.locator('[data-field="size"]')).to_contain_text(" MiB / 19.1 MiB")
            await expect(moving.locator('[data-field="speed"]')).to_have_text(
                re.compile(r"^\d+ KiB/s$"), timeout=WAIT_MS
            )
            text = await page.locator("#tasks").inner_text()
            assert not DECIMAL.search(text), text
            await context.close()
