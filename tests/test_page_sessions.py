"""Status-page sessions over real HTTP: login, cookie flags, CSRF on every form and on
cookie-authenticated API calls, Origin on cookie WebSockets, logout, revocation, and the
slow-down after failed logins. The browser-driven page tests are in test_page.py."""

from __future__ import annotations

import re
from typing import Any

import aiohttp

from progress_server.appkeys import STORE
from tests.apiclient import Api, assert_error, eventually
from tests.origins import Origin

COOKIE = "progress_session"


class PageSession:
    """One logged-in browser, played by hand: its cookie and the CSRF token of its page."""

    def __init__(self, api: Api, token: str, csrf: str) -> None:
        self.api = api
        self.token = token
        self.csrf = csrf

    @property
    def cookie(self) -> dict[str, str]:
        return {"Cookie": f"{COOKIE}={self.token}"}

    async def request(
        self, method: str, path: str, headers: dict[str, str] | None = None, **kwargs: Any
    ) -> aiohttp.ClientResponse:
        return await self.api.client.request(
            method,
            path,
            headers={**self.cookie, **(headers or {})},
            allow_redirects=False,
            **kwargs,
        )

    async def post_form(
        self, path: str, data: dict[str, str], csrf: str | None = None
    ) -> aiohttp.ClientResponse:
        form = {**data, "csrf_token": self.csrf if csrf is None else csrf}
        return await self.request("POST", path, headers={"Accept": "text/html"}, data=form)


async def post_login(api: Api, key: str) -> aiohttp.ClientResponse:
    resp = await api.client.post(
        "/login", data={"api_key": key}, headers={"Accept": "text/html"}, allow_redirects=False
    )
    # Cookies are sent by hand in these tests; the client's own jar must not add any.
    api.client.session.cookie_jar.clear()
    return resp


async def log_in(api: Api, key: str | None = None) -> PageSession:
    resp = await post_login(api, key or api.key)
    assert resp.status == 303, await resp.text()
    token = resp.cookies[COOKIE].value
    page = await api.client.get("/", headers={"Cookie": f"{COOKIE}={token}"})
    html = await page.text()
    match = re.search(r'name="csrf-token" content="([^"]+)"', html)
    assert match, html
    return PageSession(api, token, match.group(1))


async def test_root_is_the_login_form_without_a_session(api: Api) -> None:
    resp = await api.client.get("/")
    assert resp.status == 200
    html = await resp.text()
    assert 'action="/login"' in html and 'name="api_key"' in html
    assert 'id="tasks"' not in html


async def test_login_sets_an_httponly_samesite_strict_cookie(api: Api) -> None:
    resp = await post_login(api, api.key)
    assert resp.status == 303
    assert resp.headers["Location"] == "/"
    set_cookie = resp.headers["Set-Cookie"]
    assert set_cookie.startswith(f"{COOKIE}=")
    assert "HttpOnly" in set_cookie
    assert "SameSite=Strict" in set_cookie
    # The cookie is a fresh random token, never the API key itself.
    assert api.key not in set_cookie


async def test_a_bad_key_is_refused_and_sets_no_cookie(api: Api) -> None:
    resp = await post_login(api, "psk_not_a_real_key")
    assert resp.status == 401
    assert "Set-Cookie" not in resp.headers
    html = await resp.text()
    assert "not valid" in html
    assert 'name="api_key"' in html


async def test_repeated_failed_logins_slow_down_and_say_so(api: Api) -> None:
    statuses = [(await post_login(api, f"psk_wrong_{i}")).status for i in range(10)]
    assert statuses == [401] * 10
    resp = await post_login(api, "psk_wrong_again")
    assert resp.status == 429
    assert int(resp.headers["Retry-After"]) > 0
    assert "Too many failed logins" in await resp.text()
    # While the address waits, even the right key is not tried.
    assert (await post_login(api, api.key)).status == 429


async def test_the_logged_in_page_lists_only_this_keys_tasks(api: Api, origin: Origin) -> None:
    mine = await api.submit(origin.url(size=1000), filename="mine.bin")
    other = await api.new_key("other")
    theirs = await api.submit(origin.url(size=1000), key=other, filename="theirs.bin")
    page = await log_in(api)
    html = await (await page.request("GET", "/")).text()
    assert mine["task_id"] in html and "mine.bin" in html
    assert theirs["task_id"] not in html and "theirs.bin" not in html


async def test_form_posts_need_the_sessions_csrf_token(api: Api, origin: Origin) -> None:
    page = await log_in(api)
    for csrf in ("", "forged"):
        resp = await page.post_form("/tasks", {"url": origin.url(size=1000)}, csrf=csrf)
        assert resp.status == 403
        assert "text/html" in resp.headers["Content-Type"]
    assert await api.tasks() == []

    resp = await page.post_form("/tasks", {"url": origin.url(size=1000), "filename": "ok.bin"})
    assert resp.status == 303
    tasks = await api.tasks()
    assert [t["filename"] for t in tasks] == ["ok.bin"]

    # Another session's token does not work in this one.
    second = await log_in(api)
    task_id = tasks[0]["task_id"]
    await api.wait_for(task_id, "completed")
    resp = await page.post_form(f"/tasks/{task_id}/delete", {}, csrf=second.csrf)
    assert resp.status == 403
    assert len(await api.tasks()) == 1


async def test_a_form_posted_from_another_site_is_refused(api: Api, origin: Origin) -> None:
    page = await log_in(api)
    resp = await page.request(
        "POST",
        "/tasks",
        headers={"Origin": "https://evil.example", "Accept": "text/html"},
        data={"url": origin.url(size=1000), "csrf_token": page.csrf},
    )
    assert resp.status == 403
    assert await api.tasks() == []


async def test_form_actions_change_the_task(api: Api, origin: Origin) -> None:
    page = await log_in(api)
    task = await api.submit(origin.url(size=2_000_000, rate=200_000))
    task_id = task["task_id"]
    resp = await page.post_form(f"/tasks/{task_id}/pause", {})
    assert resp.status == 303
    assert (await api.task(task_id))["state"] == "paused"
    assert (await page.post_form(f"/tasks/{task_id}/resume", {})).status == 303
    assert (await api.task(task_id))["state"] in ("pending", "downloading")
    assert (await page.post_form(f"/tasks/{task_id}/cancel", {})).status == 303
    assert (await api.task(task_id))["state"] == "cancelled"

    # A refused transition is a clear page-level error, rendered by the one error renderer.
    resp = await page.post_form(f"/tasks/{task_id}/pause", {})
    assert resp.status == 409
    assert "cannot be paused" in await resp.text()

    assert (await page.post_form(f"/tasks/{task_id}/delete", {})).status == 303
    assert await api.tasks() == []


async def test_a_bad_form_is_a_clear_error_and_stores_nothing(api: Api) -> None:
    page = await log_in(api)
    for form in (
        {"url": "ftp://example.com/x"},
        {"url": ""},
        {"url": "http://x/", "filename": "../x"},
    ):
        resp = await page.post_form("/tasks", form)
        assert resp.status == 422, form
        assert "text/html" in resp.headers["Content-Type"]
    missing = "/tasks/00000000-0000-4000-8000-000000000000/cancel"
    assert (await page.post_form(missing, {})).status == 404
    assert await api.tasks() == []


async def test_cookie_api_calls_need_the_csrf_header_to_change_anything(
    api: Api, origin: Origin
) -> None:
    page = await log_in(api)
    listing = await page.request("GET", "/api/downloads")
    assert listing.status == 200

    body = {"url": origin.url(size=1000)}
    resp = await page.request("POST", "/api/downloads", json=body)
    assert resp.status == 403
    assert_error(await resp.json(), "forbidden")
    resp = await page.request("POST", "/api/downloads", json=body, headers={"X-CSRF-Token": "x"})
    assert resp.status == 403
    assert await api.tasks() == []

    resp = await page.request(
        "POST", "/api/downloads", json=body, headers={"X-CSRF-Token": page.csrf}
    )
    assert resp.status == 201
    assert len(await api.tasks()) == 1


async def test_cookie_websockets_must_come_from_this_site(api: Api, origin: Origin) -> None:
    page = await log_in(api)
    url = api.client.make_url("/api/progress/ws")
    task = await api.submit(origin.url(size=1000))

    try:
        await api.client.session.ws_connect(
            url, headers={**page.cookie, "Origin": "https://evil.example"}
        )
    except aiohttp.WSServerHandshakeError as exc:
        assert exc.status == 403
    else:
        raise AssertionError("a cross-site cookie WebSocket was accepted")

    own_origin = f"http://{url.host}:{url.port}"
    async with api.client.session.ws_connect(
        url, headers={**page.cookie, "Origin": own_origin}
    ) as ws:
        await ws.send_json({"action": "subscribe", "task_id": task["task_id"]})
        answer = await ws.receive_json(timeout=10)
        assert answer["event"] == "subscribed"
        assert answer["task_id"] == task["task_id"]


async def test_logout_ends_the_session_on_the_server(api: Api) -> None:
    page = await log_in(api)
    resp = await page.post_form("/logout", {})
    assert resp.status == 303
    assert f"{COOKIE}=" in resp.headers["Set-Cookie"]
    # The old cookie, replayed, no longer logs in anywhere.
    html = await (await page.request("GET", "/")).text()
    assert 'name="api_key"' in html
    assert (await page.request("GET", "/api/downloads")).status == 401


async def test_revoking_the_key_ends_its_sessions(api: Api) -> None:
    page = await log_in(api)
    assert (await page.request("GET", "/api/downloads")).status == 200
    await api.client.app[STORE].revoke_key("default")

    async def refused() -> bool:
        return (await page.request("GET", "/api/downloads")).status == 401

    # The key ring re-reads the keys twice a second.
    await eventually(refused, 10, lambda: "the revoked key's session still works")
    html = await (await page.request("GET", "/")).text()
    assert 'name="api_key"' in html


async def test_static_files_are_served(api: Api) -> None:
    for name, kind in (("app.js", "javascript"), ("app.css", "text/css")):
        resp = await api.client.get(f"/static/{name}")
        assert resp.status == 200
        assert kind in resp.headers["Content-Type"]
    assert (await api.client.get("/static/nope.js")).status == 404
