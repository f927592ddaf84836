"""Work stealing while answers are still on their way: a steal never turns a correct
answer into a refused one, and no byte is fetched twice."""

from __future__ import annotations

import asyncio
import re
from typing import Any

from aiohttp import web

from tests.conftest import MakeApi
from tests.enginekit import FAST_RETRIES, TinyOrigin, downloaded, restarts, sha256_file
from tests.origins import payload, payload_sha256

SIZE = 2_000_000
SEED = 7
ETAG = '"steal-v1"'
SPLIT: dict[str, Any] = {"segments": 2, "min_segment_size": 200_000, **FAST_RETRIES}


class LateSecondAnswer:
    """The whole file trickles for a moment (so the download is split), then comes at
    once; the first ranged request (the second connection's) is answered, correctly,
    only a second later: long enough for the first connection to finish its part and
    steal from the second's."""

    def __init__(self) -> None:
        self.data = payload(SIZE, SEED)
        self.starts: list[int] = []
        self._delayed = False

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        asked = request.headers.get("Range")
        if asked is None:
            self.starts.append(0)
            whole = web.StreamResponse(
                headers={"Content-Length": str(SIZE), "ETag": ETAG, "Accept-Ranges": "bytes"}
            )
            await whole.prepare(request)
            for at in range(0, 64 * 1024, 8192):
                await whole.write(self.data[at : at + 8192])
                await asyncio.sleep(0.03)
            await whole.write(self.data[64 * 1024 :])
            return whole
        found = re.fullmatch(r"bytes=(\d+)-(\d*)", asked)
        assert found, asked
        first = int(found[1])
        last = int(found[2]) if found[2] else SIZE - 1
        self.starts.append(first)
        if not self._delayed:
            self._delayed = True
            await asyncio.sleep(1.0)
        return web.Response(
            status=206,
            body=self.data[first : last + 1],
            headers={"Content-Range": f"bytes {first}-{last}/{SIZE}", "ETag": ETAG},
        )


async def test_a_steal_while_a_request_is_pending_keeps_its_answer(make_api: MakeApi) -> None:
    api = await make_api(**SPLIT)
    origin = LateSecondAnswer()
    async with TinyOrigin(origin) as server:
        task = await api.submit(server.url("/late.bin"))
        done = await api.wait_for(task["task_id"], "completed", within=30)
    assert sha256_file(downloaded(api, done)) == payload_sha256(SIZE, SEED)
    events = await api.events(task["task_id"])
    assert restarts(events) == []
    # The late answer was the range asked for: it is kept, so no offset is asked twice
    # (refused, its bytes would be fetched again, or the file from zero).
    assert len(origin.starts) > 2, origin.starts
    assert len(set(origin.starts)) == len(origin.starts), origin.starts
