"""Helpers for the browser tests of the status page: Debian's Chromium through Playwright.

The browser is never downloaded (`playwright install` is not used): Playwright drives the
system's /usr/bin/chromium. Screenshots go to test-artifacts/ (gitignored).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from playwright.async_api import Browser, Page, async_playwright

from tests.serverproc import REPO_ROOT

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
]
ARTIFACTS = REPO_ROOT / "test-artifacts"
# Generous: two shared cores may be running the server, the origin and the browser at once.
WAIT_MS = 30_000


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


async def log_in(page: Page, base_url: str, key: str) -> None:
    await page.goto(base_url)
    await page.fill("#api_key", key)
    await page.click("form.login-form button[type=submit]")
    await page.wait_for_selector("#add-form")


def row(page: Page, task_id: str) -> str:
    """CSS selector of one task's <tbody>."""
    return f'tbody.task[data-task-id="{task_id}"]'


async def bar_value(page: Page, task_id: str) -> float | None:
    """The row's <progress> value, None while it is indeterminate (or the row is absent)."""
    value = await page.evaluate(
        """(sel) => {
            const bar = document.querySelector(sel + ' progress');
            return bar && bar.hasAttribute('value') ? bar.value : null;
        }""",
        row(page, task_id),
    )
    return None if value is None else float(value)


async def geometry(page: Page, task_id: str) -> list[int]:
    """Where the row's cells sit (left edge and width of each) and how tall the row is."""
    boxes: list[int] = await page.evaluate(
        """(sel) => {
            const main = document.querySelector(sel + ' tr.main');
            const cells = [...main.children].flatMap((cell) => {
                const box = cell.getBoundingClientRect();
                return [Math.round(box.left), Math.round(box.width)];
            });
            return [...cells, Math.round(main.getBoundingClientRect().height)];
        }""",
        row(page, task_id),
    )
    return boxes


async def watch_bar(
    page: Page, task_id: str, until_state: str, within: float = 60
) -> tuple[list[float], set[tuple[int, ...]]]:
    """Every distinct bar value seen until the row shows `until_state`, and every layout of
    the row seen meanwhile (see `geometry`)."""
    seen: list[float] = []
    layouts: set[tuple[int, ...]] = set()
    deadline = time.monotonic() + within
    while True:
        value = await bar_value(page, task_id)
        if value is not None and (not seen or seen[-1] != value):
            seen.append(value)
            layouts.add(tuple(await geometry(page, task_id)))
        state = await page.get_attribute(row(page, task_id), "data-state", timeout=WAIT_MS)
        if state == until_state:
            return seen, layouts
        if time.monotonic() > deadline:
            raise AssertionError(f"row never reached {until_state} (is {state}); bar: {seen}")
        await page.wait_for_timeout(50)


async def record_live_status(page: Page) -> None:
    """From now on, keep every text the connection indicator shows (see `live_history`)."""
    await page.evaluate(
        """() => {
            const live = document.getElementById('live');
            window.__live = [];
            new MutationObserver(() => {
                window.__live.push(live.dataset.mode + ': ' + live.textContent.trim());
            }).observe(live, {subtree: true, childList: true, characterData: true,
                              attributes: true});
        }"""
    )


async def live_history(page: Page) -> list[str]:
    history: list[str] = await page.evaluate("window.__live")
    return history


def artifact(name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS / name
