"""A task's record names the best file name known: the one the origin or the user gave,
else the URL's last path segment, sanitised, so a task that failed before the origin named
a file is not `filename: null` in the API while the page and CLI show a name (#11)."""

from __future__ import annotations

from tests.apiclient import Api
from tests.conftest import MakeApi
from tests.origins import Origin
from tests.serverproc import free_port


async def test_a_task_that_failed_before_any_answer_is_named_after_its_url(
    make_api: MakeApi,
) -> None:
    api: Api = await make_api(max_retries=0)
    url = f"http://127.0.0.1:{free_port()}/files/..%2Fquarterly%20report.pdf?token=x"
    task = await api.submit(url)
    assert task["filename"] == "quarterly report.pdf"
    failed = await api.wait_for(task["task_id"], "failed")
    assert failed["filename"] == "quarterly report.pdf"
    listed = await api.tasks()
    assert listed[0]["filename"] == "quarterly report.pdf"


async def test_a_url_without_a_name_stays_null_and_the_origin_name_wins(
    api: Api, origin: Origin
) -> None:
    nameless = await api.submit(origin.url("/", size=10))
    assert nameless["filename"] is None

    named = await api.submit(
        origin.url("/file/from-url.bin", size=1000, disposition='attachment; filename="x.iso"')
    )
    assert named["filename"] == "from-url.bin"
    done = await api.wait_for(named["task_id"], "completed")
    assert done["filename"] == "x.iso"
    assert (api.settings.downloads_dir / "x.iso").exists()
    assert not (api.settings.downloads_dir / "from-url.bin").exists()
