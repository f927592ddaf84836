"""GET /metrics: who may scrape it, and the numbers moving during a real download."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from tests.apiclient import Api, eventually
from tests.conftest import MakeApi
from tests.origins import Origin

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def scrape(api: Api, key: str | None) -> Samples:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    resp = await api.client.get("/metrics", headers=headers)
    text = await resp.text()
    assert resp.status == 200, text
    assert resp.headers["Content-Type"].startswith("text/plain")
    return parse(text)


async def test_metrics_need_an_admin_key(api: Api) -> None:
    assert (await api.client.get("/metrics")).status == 401
    user = await api.client.get("/metrics", headers=api.auth())
    assert user.status == 403
    assert (await user.json())["error"]["type"] == "forbidden"
    wrong = await api.client.get("/metrics", headers={"Authorization": "Bearer nope"})
    assert wrong.status == 401
    admin = await api.new_key("ops", admin=True)
    assert "progress_server_tasks" in str(await scrape(api, admin))


async def test_metrics_loopback_lets_loopback_scrape_without_a_key(make_api: MakeApi) -> None:
    api = await make_api(metrics_loopback=True)
    samples = await scrape(api, None)
    assert value(samples, "progress_server_tasks", state="pending") == 0
    # Through a reverse proxy every request comes from loopback: those still need a key.
    proxied = await api.client.get("/metrics", headers={"X-Forwarded-For": "203.0.113.9"})
    assert proxied.status == 401


async def test_numbers_move_during_a_download(api: Api, origin: Origin) -> None:
    admin = await api.new_key("ops", admin=True)
    before = await scrape(api, admin)
    assert value(before, "progress_server_downloaded_bytes_total") == 0

    size = 3_000_000
    slow = await api.submit(origin.url(size=size, rate=1_000_000, chunk=16384), filename="slow")
    await api.wait_bytes(slow["task_id"], 300_000)
    during = await scrape(api, admin)
    assert value(during, "progress_server_active_downloads") == 1
    assert value(during, "progress_server_tasks", state="downloading") == 1
    first_bytes = value(during, "progress_server_downloaded_bytes_total")
    assert first_bytes > 0
    # The loop-lag monitor reports (a number, not an absence).
    assert ("progress_server_event_loop_lag_max_seconds", ()) in during
    assert 0 <= value(during, "progress_server_event_loop_lag_seconds") < 5

    later: Samples = {}

    async def grew() -> bool:
        nonlocal later
        later = await scrape(api, admin)
        return value(later, "progress_server_downloaded_bytes_total") > first_bytes

    await eventually(grew, 30, lambda: "downloaded bytes did not grow")
    assert value(later, "progress_server_events_published_total") > value(
        during, "progress_server_events_published_total"
    )

    # A dropped connection is retried: counted by its error type.
    dropping = await api.submit(origin.url(size=200_000, drop_after=50_000, drop_times=1))
    await api.wait_for(dropping["task_id"], "completed")
    await api.wait_for(slow["task_id"], "completed")
    after = await scrape(api, admin)
    assert value(after, "progress_server_retries_total", error_type="network_error") == 1
    assert value(after, "progress_server_tasks", state="completed") == 2
    assert value(after, "progress_server_active_downloads") == 0
    assert value(after, "progress_server_downloaded_bytes_total") >= size + 200_000
    persisted = value(after, "progress_server_events_persisted_total")
    assert 0 < persisted < value(after, "progress_server_events_published_total")
    assert value(after, "progress_server_sqlite_write_seconds_count") >= persisted


async def test_websocket_connections_and_frames_are_counted(api: Api, origin: Origin) -> None:
    admin = await api.new_key("ops", admin=True)
    async with api.client.ws_connect("/api/progress/ws", headers=api.auth()) as ws:
        await ws.send_json({"action": "subscribe", "task_id": "*"})
        task = await api.submit(origin.url(size=400_000, rate=400_000, chunk=16384))
        await api.wait_for(task["task_id"], "completed")

        async def counted() -> bool:
            samples = await scrape(api, admin)
            return value(samples, "progress_server_websocket_frames_sent_total") >= 4

        await eventually(counted, 30, lambda: "frames sent never reached 4")
        during = await scrape(api, admin)
        assert value(during, "progress_server_websocket_connections") == 1

    async def closed() -> bool:
        samples = await scrape(api, admin)
        return value(samples, "progress_server_websocket_connections") == 0

    await eventually(closed, 30, lambda: "the closed socket is still counted")
