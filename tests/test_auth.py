"""Bearer keys: every /api route needs one, a key sees only its tasks, admins see all."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from click.testing import CliRunner

from progress_server.cli import main
from tests.apiclient import Api, assert_error, eventually
from tests.origins import Origin

ROUTES = [
    ("POST", "/api/downloads"),
    ("GET", "/api/downloads"),
    ("GET", "/api/downloads/{id}"),
    ("DELETE", "/api/downloads/{id}"),
    ("POST", "/api/downloads/{id}/cancel"),
    ("POST", "/api/downloads/{id}/retry"),
    ("POST", "/api/downloads/{id}/pause"),
    ("POST", "/api/downloads/{id}/resume"),
    ("GET", "/api/downloads/{id}/file"),
    ("GET", "/api/downloads/{id}/events"),
    ("GET", "/api/progress/{id}"),
    ("GET", "/api/progress?task_id={id}"),
    ("GET", "/api/events"),
]


@pytest.mark.parametrize(("method", "path"), ROUTES)
@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer", "Bearer psk_wrong", "Basic dXNlcjpwYXNz", "psk_no_scheme"],
)
async def test_every_api_route_needs_a_valid_key(
    api: Api, origin: Origin, method: str, path: str, authorization: str | None
) -> None:
    task = await api.submit(origin.url(size=10))
    headers = {} if authorization is None else {"Authorization": authorization}
    resp = await api.client.request(
        method, path.format(id=task["task_id"]), headers=headers, json={"url": origin.url()}
    )
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert_error(await resp.json(), "unauthorized")
    assert len(await api.tasks()) == 1


async def test_healthz_needs_no_key(api: Api) -> None:
    resp = await api.client.get("/healthz")
    assert resp.status == 200
    assert (await resp.json())["status"] == "ok"


async def test_another_keys_task_is_404_exactly_like_a_missing_one(
    api: Api, origin: Origin
) -> None:
    other = await api.new_key("other")
    theirs = await api.submit(origin.url(size=10), key=other)
    await api.wait_for(theirs["task_id"], "completed", key=other)
    missing = str(uuid.uuid4())
    for method, path in ROUTES:
        if "{id}" not in path:
            continue
        foreign = await api.call(method, path.format(id=theirs["task_id"]))
        absent = await api.call(method, path.format(id=missing))
        if "?task_id" in path:
            # The batch form names what a key may not see exactly as it names unknown ids.
            assert (await foreign.json()) == {"tasks": [], "missing": [theirs["task_id"]]}
            assert (await absent.json()) == {"tasks": [], "missing": [missing]}
            continue
        assert foreign.status == absent.status == 404, (method, path)
        assert (await foreign.json()) == (await absent.json())
    # Nothing the other key did changed their task.
    assert (await api.task(theirs["task_id"], key=other))["state"] == "completed"
    assert await api.tasks() == []
    mine_events = await api.events()
    assert all(e["task_id"] != theirs["task_id"] for e in mine_events)


async def test_admin_key_sees_and_controls_every_task(api: Api, origin: Origin) -> None:
    admin = await api.new_key("root", admin=True)
    user_task = await api.submit(origin.url(size=10_000_000, rate=1_000_000))
    listed = await api.tasks(key=admin)
    assert [t["task_id"] for t in listed] == [user_task["task_id"]]
    resp = await api.call("GET", f"/api/progress/{user_task['task_id']}", key=admin)
    assert resp.status == 200
    admin_events = await api.json("GET", "/api/events", key=admin)
    assert any(e["task_id"] == user_task["task_id"] for e in admin_events["events"])
    cancelled = await api.json("POST", f"/api/downloads/{user_task['task_id']}/cancel", key=admin)
    assert cancelled["state"] == "cancelled"
    # The admin's own tasks stay invisible to the user.
    admin_task = await api.submit(origin.url(size=10), key=admin)
    resp = await api.call("GET", f"/api/downloads/{admin_task['task_id']}")
    assert resp.status == 404


async def test_revoked_key_stops_working_within_a_second(api: Api) -> None:
    doomed = await api.new_key("doomed")
    assert (await api.call("GET", "/api/downloads", key=doomed)).status == 200
    # Revoked by the CLI's own code, on its own connection to the database.
    revoke = ["keys", "revoke", "doomed", "--data-dir", str(api.settings.data_dir)]
    result = await asyncio.to_thread(CliRunner().invoke, main, revoke)
    assert result.exit_code == 0, result.output

    async def refused() -> bool:
        resp = await api.call("GET", "/api/downloads", key=doomed)
        return resp.status == 401

    # At once (tests/test_revocation.py times it against a server process); the margin
    # here is for a loaded CI machine.
    await eventually(refused, within=1.5, message=lambda: "revoked key still accepted")
    assert (await api.call("GET", "/api/downloads")).status == 200


async def test_repeated_failed_logins_get_429(api: Api) -> None:
    statuses = []
    for _ in range(15):
        resp = await api.call("GET", "/api/downloads", key="psk_guess")
        statuses.append(resp.status)
    assert statuses[0] == 401
    assert statuses[-1] == 429
    assert set(statuses) == {401, 429}
    resp = await api.call("GET", "/api/downloads", key="psk_guess")
    assert resp.status == 429
    assert int(resp.headers["Retry-After"]) > 0
    assert_error(await resp.json(), "rate_limited")
    # Only failed logins are slowed: a valid key from the same address still works.
    assert (await api.call("GET", "/api/downloads")).status == 200
