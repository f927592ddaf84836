"""The Python client for progress-server: the documented way to use it from Python.

Everything is async and built on aiohttp (already a dependency of the server)::

    import asyncio
    from progress_server.client import ProgressClient

    async def main() -> None:
        async with ProgressClient("http://127.0.0.1:8000", "psk_...") as client:
            task = await client.create("https://example.com/video.mp4")
            async for event in client.subscribe([task["task_id"]]):
                print(event["event"], event.get("progress"))
                if event.get("state") in ("completed", "failed", "cancelled"):
                    break
            # Or, without looking at each event:
            [done] = await client.wait([task["task_id"]])
            if done["state"] == "completed":
                await client.save_file(done["task_id"], ".")

    asyncio.run(main())

Records and events are the server's JSON exactly as it sends them (plain dicts, typed with
`TypedDict` for editors and mypy); nothing is renamed or dropped, so `json.dumps` of a
record is the same record `GET /api/downloads/{id}` returns.

Failures raise `ProgressClientError` subclasses: `ApiError` for an error answer of the
server (with its `status`, `type` and `message`), `ServerUnreachable` when no answer came.
"""

from __future__ import annotations

from progress_server.client.errors import (
    ApiError,
    ProgressClientError,
    ServerUnreachable,
    SubscriptionError,
)
from progress_server.client.progress_client import ProgressClient
from progress_server.client.records import (
    FINAL_STATES,
    Event,
    ProgressInfo,
    TaskError,
    TaskRecord,
    TaskResult,
)
from progress_server.client.subscription import Subscription

__all__ = [
    "FINAL_STATES",
    "ApiError",
    "Event",
    "ProgressClient",
    "ProgressClientError",
    "ProgressInfo",
    "ServerUnreachable",
    "Subscription",
    "SubscriptionError",
    "TaskError",
    "TaskRecord",
    "TaskResult",
]
