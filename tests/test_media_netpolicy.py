"""--deny-private-networks inside the media worker: every URL it fetches, not only the first.

The site answers on 127.0.0.1 and 127.0.0.2. With only 127.0.0.1/32 allowed, 127.0.0.2
plays the private network: a manifest on the allowed host whose fragments live there, or
redirect there, must fail as invalid_url without one request reaching it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from progress_server.media.errors import MediaError
from progress_server.media.job import MediaJob
from progress_server.media.results import MediaFile
from progress_server.media.transfer import MediaTransfer
from tests.media import duration
from tests.media_site import HLS_SECONDS, MediaSite, RecordingObserver

pytestmark = pytest.mark.timeout(180)

PRIVATE = MediaSite.HOSTS[1]


def guarded(url: str, out: Path) -> MediaJob:
    return MediaJob(url=url, output_dir=out, deny_private=True, allow_networks=("127.0.0.1/32",))


async def refused(job: MediaJob) -> MediaError:
    # Retries allowed, to show a refusal is final rather than retried.
    transfer = MediaTransfer(max_retries=3, retry_base_delay=0.01)
    observer = RecordingObserver()
    with pytest.raises(MediaError) as caught:
        await transfer.download(job, observer)
    assert observer.failures == []
    return caught.value


async def test_fragments_on_a_private_host_are_refused(site: MediaSite, tmp_path: Path) -> None:
    error = await refused(guarded(site.url("/elsewhere/hls/index.m3u8"), tmp_path))

    assert error.error_type == "invalid_url"
    assert PRIVATE in error.message and "private" in error.message
    assert site.hits_on(PRIVATE) == []
    assert any(hit.path == "/elsewhere/hls/index.m3u8" for hit in site.hits)


async def test_a_fragment_redirected_to_a_private_host_is_refused(
    site: MediaSite, tmp_path: Path
) -> None:
    error = await refused(guarded(site.url("/redirected/hls/index.m3u8"), tmp_path))

    assert error.error_type == "invalid_url"
    assert PRIVATE in error.message
    # The redirect itself was fetched; its target never was.
    assert any(hit.path == "/redirected/hls/seg000.ts" for hit in site.hits)
    assert site.hits_on(PRIVATE) == []


async def test_a_page_on_a_private_host_is_refused_before_any_request(
    site: MediaSite, tmp_path: Path
) -> None:
    error = await refused(guarded(site.url("/page/one.html", host=PRIVATE), tmp_path))

    assert error.error_type == "invalid_url"
    assert site.hits == []


async def test_the_allowed_network_still_downloads(site: MediaSite, tmp_path: Path) -> None:
    result = await MediaTransfer(max_retries=0).download(
        guarded(site.url("/page/one.html"), tmp_path), RecordingObserver()
    )

    assert isinstance(result, MediaFile)
    assert duration(result.path) == pytest.approx(HLS_SECONDS, abs=0.5)
    assert site.hits_on(PRIVATE) == []
