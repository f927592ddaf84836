"""`keys revoke` works at once: once the command has exited, the very next request with the
key gets 401 and its open WebSockets close within 100 ms (#11)."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import aiohttp

from tests.serverproc import REPO_ROOT, ServerProcess, create_key
from tests.wsclient import recv

CLOSE_WITHIN = 0.1


async def cli(data_dir: Path, *args: str) -> None:
    """Run `progress-server ARGS --data-dir DATA_DIR` as its own process, to its exit."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "progress_server",
        *args,
        "--data-dir",
        str(data_dir),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await proc.communicate()
    assert proc.returncode == 0, output.decode()


async def closed_at(ws: aiohttp.ClientWebSocketResponse) -> tuple[float, int | None]:
    """When the server closed the socket, and with which code."""
    async for _ in ws:
        pass
    return time.monotonic(), ws.close_code


async def test_revoked_key_gets_401_on_the_next_request_and_its_sockets_close(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    keeper = create_key(data, "keeper")
    doomed = create_key(data, "doomed")
    with ServerProcess(data) as server:
        url = f"{server.base_url}/api/downloads"
        doomed_auth = {"Authorization": f"Bearer {doomed}"}
        keeper_auth = {"Authorization": f"Bearer {keeper}"}
        async with aiohttp.ClientSession() as http:
            # The server has seen the key and keeps it in memory: what must not linger.
            for _ in range(5):
                async with http.get(url, headers=doomed_auth) as resp:
                    assert resp.status == 200
            sockets = []
            for _ in range(3):
                ws = await http.ws_connect(server.ws_url, headers=doomed_auth)
                await ws.send_json({"action": "subscribe", "task_id": "*"})
                assert (await recv(ws))["event"] == "subscribed"
                sockets.append(ws)
            watchers = [asyncio.create_task(closed_at(ws)) for ws in sockets]
            await asyncio.sleep(0.3)

            await cli(data, "keys", "revoke", "doomed")
            revoked = time.monotonic()
            async with http.get(url, headers=doomed_auth) as resp:
                assert resp.status == 401, await resp.text()
                assert resp.headers["WWW-Authenticate"].startswith("Bearer")
            closes = await asyncio.wait_for(asyncio.gather(*watchers), 5)
            for when, code in closes:
                assert code == 1008
                assert when - revoked < CLOSE_WITHIN, f"closed {when - revoked:.3f} s after"

            async with http.get(url, headers=keeper_auth) as resp:
                assert resp.status == 200
            async with http.ws_connect(server.ws_url, headers=keeper_auth) as ws:
                await ws.send_json({"action": "ping"})
                assert (await recv(ws))["event"] == "pong"


async def test_a_key_created_by_the_cli_works_at_once_and_revoking_another_keeps_it(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    create_key(data, "first")
    with ServerProcess(data) as server:
        new_key = create_key(data, "second")
        async with aiohttp.ClientSession() as http:
            auth = {"Authorization": f"Bearer {new_key}"}
            async with http.get(f"{server.base_url}/api/downloads", headers=auth) as resp:
                assert resp.status == 200
            await cli(data, "keys", "revoke", "first")
            async with http.get(f"{server.base_url}/api/downloads", headers=auth) as resp:
                assert resp.status == 200
