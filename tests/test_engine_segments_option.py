"""The "segments" task field and the --segments family of serve options: bad values are
refused before anything is stored."""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner

from progress_server.cli import main
from tests.apiclient import Api, assert_error
from tests.origins import Origin


@pytest.mark.parametrize("value", [0, 17, -1, "4", True, False, 2.5, [4], {"n": 4}])
async def test_a_bad_segments_value_is_a_422_and_creates_nothing(
    api: Api, origin: Origin, value: Any
) -> None:
    body = {"url": origin.url("/file/s.bin"), "segments": value}
    resp = await api.call("POST", "/api/downloads", json=body)
    assert resp.status == 422, await resp.text()
    error = await resp.json()
    assert_error(error, "validation_error")
    assert "segments" in error["error"]["message"]
    assert await api.tasks() == []


@pytest.mark.parametrize("value", [1, 16])
async def test_segments_from_1_to_16_are_kept_with_the_task(
    api: Api, origin: Origin, value: int
) -> None:
    task = await api.submit(origin.url("/file/ok.bin", size=1000), segments=value)
    assert task["options"] == {"segments": value}
    assert (await api.task(task["task_id"]))["options"] == {"segments": value}


@pytest.mark.parametrize(
    "args",
    [
        ["--segments", "0"],
        ["--segments", "17"],
        ["--min-segment-size", "1000"],
        ["--max-connections-per-host", "0"],
    ],
)
def test_serve_refuses_out_of_range_segment_options(args: list[str], tmp_path: Any) -> None:
    result = CliRunner().invoke(main, ["serve", "--data-dir", str(tmp_path), *args])
    assert result.exit_code == 2, result.output
    assert args[0] in result.output
