"""The OpenAPI document and the interactive API viewer need no key (they hold no data); the
viewer is served from a packaged bundle, renders offline in Chromium and lists every
operation; the status page links to it from its footer (#11)."""

from __future__ import annotations

from urllib.parse import urlsplit

from playwright.async_api import Request, Route, expect

from progress_server.openapi import build_document
from tests.apiclient import Api
from tests.pagekit import WAIT_MS, chromium, log_in


def operation_count() -> int:
    methods = {"get", "post", "put", "patch", "delete"}
    return sum(
        1 for item in build_document()["paths"].values() for method in item if method in methods
    )


async def test_the_document_and_the_viewer_need_no_key(api: Api) -> None:
    document = await api.client.get("/api/openapi.json")
    assert document.status == 200
    assert await document.json() == build_document()
    # A wrong key does not turn a public route into a 401 either.
    wrong = await api.client.get("/api/openapi.json", headers={"Authorization": "Bearer psk_wrong"})
    assert wrong.status == 200

    viewer = await api.client.get("/api/docs")
    assert viewer.status == 200
    assert viewer.content_type == "text/html"
    html = await viewer.text()
    assert "/api/openapi.json" in html
    assert "http://" not in html and "https://" not in html, "the viewer must not use a CDN"
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
        resp = await api.client.get(f"/api/docs/{asset}")
        assert resp.status == 200, asset
        assert len(await resp.read()) > 10_000
    assert (await api.client.get("/api/docs/../../etc/passwd")).status == 404
    assert (await api.client.get("/api/docs/index.j2")).status == 404
    # Everything else under /api still needs a key.
    assert (await api.client.get("/api/downloads")).status == 401


async def test_the_viewer_renders_offline_and_lists_every_operation(api: Api) -> None:
    base = str(api.client.make_url("/"))
    ours = urlsplit(base).netloc
    elsewhere: list[str] = []

    async def only_this_server(route: Route, request: Request) -> None:
        if urlsplit(request.url).netloc == ours:
            await route.continue_()
        else:
            elsewhere.append(request.url)
            await route.abort()

    async with chromium() as browser:
        context = await browser.new_context()
        page = await context.new_page()
        await page.route("**/*", only_this_server)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        await page.goto(base + "api/docs")
        operations = page.locator(".opblock")
        await expect(operations.first).to_be_visible(timeout=WAIT_MS)
        assert await operations.count() == operation_count()
        await expect(
            page.locator(".opblock-summary-path", has_text="/api/downloads").first
        ).to_be_visible()
        await expect(page.get_by_text("progress-server").first).to_be_visible()
        await context.close()
    assert elsewhere == []
    assert errors == []


async def test_the_status_page_footer_links_to_the_viewer(api: Api) -> None:
    base = str(api.client.make_url("/"))
    async with chromium() as browser:
        page = await browser.new_page()
        await log_in(page, base, api.key)
        link = page.locator("footer a", has_text="API")
        await expect(link.first).to_be_visible()
        await link.first.click()
        await page.wait_for_url("**/api/docs")
        await expect(page.locator(".opblock").first).to_be_visible(timeout=WAIT_MS)
