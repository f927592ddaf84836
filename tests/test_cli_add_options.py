"""`progress-server add --max-speed MB/s` sets the task's own speed limit, and `add -i FILE`
reads URLs from a file (one a line, `-` for stdin), like `aria2c -i` (#11)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from click.testing import CliRunner, Result

from progress_server.cli import main
from tests.apiclient import Api
from tests.conftest import MakeApi
from tests.origins import Origin


async def cli(api: Api, *args: str, stdin: str | None = None) -> Result:
    env = {
        "PROGRESS_SERVER_URL": str(api.client.make_url("")).rstrip("/"),
        "PROGRESS_SERVER_API_KEY": api.key,
    }
    runner = CliRunner()
    return await asyncio.to_thread(runner.invoke, main, list(args), input=stdin, env=env)


async def test_max_speed_limits_the_task(make_api: MakeApi, origin: Origin) -> None:
    api = await make_api()
    added = await cli(api, "add", "--max-speed", "2.5", "--json", origin.url(size=3_000_000))
    assert added.exit_code == 0, added.output
    [record] = json.loads(added.stdout)
    assert record["options"]["max_speed_mbps"] == 2.5
    stored = await api.task(record["task_id"])
    assert stored["options"]["max_speed_mbps"] == 2.5
    await api.wait_bytes(record["task_id"], 1_000_000)
    polled = await api.progress(record["task_id"])
    assert 0 < polled["progress"]["speed_mbps"] <= 2.75

    refused = await cli(api, "add", "--max-speed", "0", origin.url(size=10))
    assert refused.exit_code == 2
    assert "max-speed" in refused.output
    assert len(await api.tasks()) == 1


async def test_urls_from_a_file_and_from_stdin(
    make_api: MakeApi, origin: Origin, tmp_path: Path
) -> None:
    api = await make_api()
    urls = [origin.url(f"/file/{name}.bin", size=1000) for name in ("a", "b", "c")]
    listing = tmp_path / "urls.txt"
    listing.write_text(f"# a comment\n{urls[0]}\n\n  {urls[1]}  \n")
    added = await cli(api, "add", "-i", str(listing), urls[2], "--json")
    assert added.exit_code == 0, added.output
    records = json.loads(added.stdout)
    assert [r["url"] for r in records] == [urls[2], urls[0], urls[1]]

    piped = await cli(
        api, "add", "--input-file", "-", "--wait", "--json", stdin="\n".join(urls[:2]) + "\n"
    )
    assert piped.exit_code == 0, piped.output
    done = json.loads(piped.stdout)
    assert [r["state"] for r in done] == ["completed", "completed"]
    assert len(await api.tasks()) == 5

    nothing = await cli(api, "add", "-i", "-", stdin="\n# only a comment\n")
    assert nothing.exit_code == 2
    assert "no URL" in nothing.output
    missing = await cli(api, "add", "-i", str(tmp_path / "absent.txt"))
    assert missing.exit_code == 2
