"""The one error path: the domain's refusals reach API, page and WebSocket callers with the
same status, in the caller's format, and every 503 says when to come back (Retry-After)."""

from __future__ import annotations

import base64
import os

from progress_server.appkeys import SCHEDULER, WS_HUB
from tests.apiclient import Api, assert_error
from tests.origins import Origin
from tests.test_page_sessions import log_in


async def test_shutting_down_is_503_with_retry_after_for_every_caller(
    api: Api, origin: Origin
) -> None:
    failed = await api.submit(origin.url("/file/gone.bin", status=404))
    await api.wait_for(failed["task_id"], "failed")
    page = await log_in(api)
    # What the app's shutdown does first: stop taking work, then refuse new sockets.
    await api.client.app[SCHEDULER].stop()
    await api.client.app[WS_HUB].shutdown()

    answers = {
        "create": await api.call("POST", "/api/downloads", json={"url": origin.url()}),
        "retry": await api.call("POST", f"/api/downloads/{failed['task_id']}/retry"),
        "page form": await page.post_form("/tasks", {"url": origin.url()}),
        "page action": await page.post_form(f"/tasks/{failed['task_id']}/retry", {}),
        "websocket": await api.call(
            "GET",
            "/api/progress/ws",
            headers={
                "Connection": "Upgrade",
                "Upgrade": "websocket",
                "Sec-WebSocket-Version": "13",
                "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
            },
        ),
    }
    for caller, resp in answers.items():
        assert resp.status == 503, caller
        assert int(resp.headers["Retry-After"]) > 0, caller
        if caller.startswith("page"):
            assert resp.content_type == "text/html", caller
            assert "shutting down" in await resp.text(), caller
        else:
            assert_error(await resp.json(), "unavailable")
    # Refused, so nothing changed.
    assert (await api.task(failed["task_id"]))["state"] == "failed"
    assert len(await api.tasks()) == 1


async def test_a_conflict_on_the_page_is_a_409_page(api: Api, origin: Origin) -> None:
    task = await api.submit(origin.url(size=1000))
    await api.wait_for(task["task_id"], "completed")
    page = await log_in(api)
    resp = await page.post_form(f"/tasks/{task['task_id']}/cancel", {})
    assert resp.status == 409
    assert resp.content_type == "text/html"
    assert "completed" in await resp.text()
    missing = await page.post_form("/tasks/00000000-0000-4000-8000-000000000000/pause", {})
    assert missing.status == 404 and missing.content_type == "text/html"
    assert (await api.task(task["task_id"]))["state"] == "completed"
