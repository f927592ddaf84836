"""The fault-injecting origin must really misbehave as documented, or other tests lie."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import aiohttp
import pytest

from tests.apiclient import eventually
from tests.origins import Origin, payload, payload_sha256, payload_slice

SIZE = 300_000


async def _read_until_error(resp: aiohttp.ClientResponse) -> tuple[bytes, BaseException | None]:
    """Body bytes received before the connection broke, and how it broke."""
    received = bytearray()
    try:
        async for chunk in resp.content.iter_chunked(65536):
            received += chunk
    except aiohttp.ClientError as exc:
        return bytes(received), exc
    return bytes(received), None


def test_payload_is_deterministic_and_offset_dependent() -> None:
    size = 2 * 1024 * 1024 + 17
    data = payload(size, seed=3)
    assert data == payload(size, seed=3)
    assert data != payload(size, seed=4)
    assert hashlib.sha256(data).hexdigest() == payload_sha256(size, seed=3)
    assert payload_slice(1_000_000, 1_100_000, seed=3) == data[1_000_000:1_100_000]
    # Consecutive MiB blocks differ, so resuming at a wrong offset changes the digest.
    assert data[: 1024 * 1024] != data[1024 * 1024 : 2 * 1024 * 1024]


async def test_full_get_and_request_log(origin: Origin) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(origin.url(size=SIZE, seed=1)) as resp:
            body = await resp.read()
            assert resp.status == 200
            assert resp.headers["Accept-Ranges"] == "bytes"
            assert resp.headers["ETag"] == '"1-300000-0"'
            assert resp.headers["Content-Length"] == str(SIZE)
            assert "Last-Modified" in resp.headers
    assert body == payload(SIZE, seed=1)
    assert origin.count("/file") == 1
    assert origin.requests[0].query == {"size": str(SIZE), "seed": "1"}


async def test_range_requests(origin: Origin) -> None:
    full = payload(SIZE)
    url = origin.url(size=SIZE)
    async with aiohttp.ClientSession() as session:
        async with session.get(url, headers={"Range": "bytes=1000-"}) as resp:
            assert resp.status == 206
            assert resp.headers["Content-Range"] == f"bytes 1000-{SIZE - 1}/{SIZE}"
            assert await resp.read() == full[1000:]
        async with session.get(url, headers={"Range": "bytes=10-19"}) as resp:
            assert resp.status == 206
            assert await resp.read() == full[10:20]
        async with session.get(url, headers={"Range": "bytes=-5"}) as resp:
            assert await resp.read() == full[-5:]
        async with session.get(url, headers={"Range": f"bytes={SIZE}-"}) as resp:
            assert resp.status == 416
            assert resp.headers["Content-Range"] == f"bytes */{SIZE}"
        async with session.get(
            origin.url(size=SIZE, no_range=1), headers={"Range": "bytes=5-"}
        ) as resp:
            assert resp.status == 200
            assert "Accept-Ranges" not in resp.headers
            assert await resp.read() == full
    assert origin.requests[0].range == "bytes=1000-"


async def test_if_range_and_changing_validators(origin: Origin) -> None:
    url = origin.url(size=SIZE)
    async with aiohttp.ClientSession() as session:
        async with session.head(url) as resp:
            etag, modified = resp.headers["ETag"], resp.headers["Last-Modified"]
            assert resp.headers["Content-Length"] == str(SIZE)
        for validator in (etag, modified):
            headers = {"Range": "bytes=100-", "If-Range": validator}
            async with session.get(url, headers=headers) as resp:
                assert resp.status == 206
        headers = {"Range": "bytes=100-", "If-Range": '"stale"'}
        async with session.get(url, headers=headers) as resp:
            assert resp.status == 200
            assert len(await resp.read()) == SIZE

        changing = origin.url(size=SIZE, change_etag=1)
        tags = set()
        for _ in range(2):
            async with session.get(changing) as resp:
                tags.add(resp.headers["ETag"])
                assert await resp.read() == payload(SIZE)
        assert len(tags) == 2

        bodies = set()
        for _ in range(2):
            async with session.get(origin.url(size=SIZE, change_content=1)) as resp:
                bodies.add(hashlib.sha256(await resp.read()).hexdigest())
        assert len(bodies) == 2


async def test_drop_after_truncates_then_recovers(origin: Origin) -> None:
    url = origin.url(size=SIZE, drop_after=100_000, drop_times=1)
    async with aiohttp.ClientSession() as session:
        async with session.get(url) as resp:
            received, error = await _read_until_error(resp)
        assert isinstance(error, aiohttp.ClientPayloadError)
        assert received == payload(100_000)
        async with session.get(url) as resp:
            assert await resp.read() == payload(SIZE)
    assert origin.count("/file") == 2


async def test_short_and_lie_length_break_the_body(origin: Origin) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(origin.url(size=SIZE, short=10)) as resp:
            assert resp.headers["Content-Length"] == str(SIZE)
            received, error = await _read_until_error(resp)
        assert error is not None
        assert len(received) == SIZE - 10
        async with session.get(origin.url(size=SIZE, lie_length=SIZE + 5)) as resp:
            received, error = await _read_until_error(resp)
        assert error is not None
        assert received == payload(SIZE)


async def test_status_fail_times_then_success(origin: Origin) -> None:
    url = origin.url(size=1000, status=503, fail_times=2, retry_after=7)
    async with aiohttp.ClientSession() as session:
        for _ in range(2):
            async with session.get(url) as resp:
                assert resp.status == 503
                assert resp.headers["Retry-After"] == "7"
        async with session.get(url) as resp:
            assert resp.status == 200
            assert await resp.read() == payload(1000)
        async with session.get(origin.url(status=404)) as resp:
            assert resp.status == 404


async def test_stall_and_rate_delay_the_body(origin: Origin) -> None:
    async with aiohttp.ClientSession() as session:
        t0 = time.monotonic()
        async with session.get(origin.url(size=SIZE, stall_after=1000, stall=0.3)) as resp:
            first = await resp.content.readexactly(1000)
            t_first = time.monotonic() - t0
            rest = await resp.read()
        elapsed = time.monotonic() - t0
        assert first + rest == payload(SIZE)
        assert t_first < 0.25 <= elapsed

        t0 = time.monotonic()
        async with session.get(origin.url(size=50_000, rate=200_000, chunk=5000)) as resp:
            await resp.read()
        assert time.monotonic() - t0 >= 0.2


async def test_headers_pass_through_and_no_length(origin: Origin) -> None:
    disposition = "attachment; filename*=UTF-8''na%C3%AFve.bin"
    url = origin.url("/file/x.bin", size=SIZE, no_length=1, disposition=disposition)
    async with aiohttp.ClientSession() as session:
        async with session.get(url, params=None) as resp:
            assert resp.headers["Content-Disposition"] == disposition
            assert "Content-Length" not in resp.headers
            assert resp.headers["Transfer-Encoding"] == "chunked"
            assert await resp.read() == payload(SIZE)
        async with session.get(origin.url(size=10, content_type="video/mp4")) as resp:
            assert resp.content_type == "video/mp4"


async def test_redirects(origin: Origin) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(origin.url("/file/a.bin", size=1000, redirect=3)) as resp:
            assert resp.status == 200
            assert len(resp.history) == 3
            assert resp.url.path == "/file/a.bin"
            assert "redirect" not in resp.url.query
            assert await resp.read() == payload(1000)
        with pytest.raises(aiohttp.TooManyRedirects):
            await session.get(origin.url(redirect_loop=1), max_redirects=5)


async def test_media(tmp_path: Path) -> None:
    (tmp_path / "clip.mp4").write_bytes(b"0123456789")
    async with Origin(media_dir=tmp_path) as media, aiohttp.ClientSession() as session:
        async with session.get(media.url("/media/clip.mp4"), headers={"Range": "bytes=2-"}) as resp:
            assert resp.status == 206
            assert await resp.read() == b"23456789"
        async with session.get(media.url("/media/missing.mp4")) as resp:
            assert resp.status == 404


async def test_conn_rate_throttles_each_connection_across_its_requests(origin: Origin) -> None:
    url = origin.url("/file/c.bin", size=100_000, conn_rate=400_000, chunk=10_000)
    connector = aiohttp.TCPConnector(limit=1)  # both requests on one connection
    async with aiohttp.ClientSession(connector=connector) as session:
        t0 = time.monotonic()
        for _ in range(2):
            async with session.get(url) as resp:
                assert await resp.read() == payload(100_000)
        one_connection = time.monotonic() - t0
    # 200 kB at 400 kB/s on one connection: about half a second, not a quarter.
    assert one_connection >= 0.4
    assert origin.sent["/file/c.bin"] == 200_000


async def test_range_once_honours_only_the_first_ranged_request(origin: Origin) -> None:
    url = origin.url("/file/once.bin", size=SIZE, range_once=1)
    async with aiohttp.ClientSession() as session:
        async with session.get(url, headers={"Range": "bytes=10-19"}) as resp:
            assert resp.status == 206 and await resp.read() == payload(SIZE)[10:20]
        async with session.get(url, headers={"Range": "bytes=10-19"}) as resp:
            assert resp.status == 200 and await resp.read() == payload(SIZE)


async def test_busy_over_answers_429_while_that_many_are_in_flight(origin: Origin) -> None:
    url = origin.url("/file/busy.bin", size=200_000, rate=400_000, busy_over=2, retry_after=3)
    async with aiohttp.ClientSession() as session:
        first = await session.get(url)
        second = await session.get(url)
        async with session.get(url) as third:
            assert third.status == 429
            assert third.headers["Retry-After"] == "3"
        assert first.status == second.status == 200
        assert await first.read() == await second.read() == payload(200_000)
        first.release()
        second.release()

        # The handlers end a moment after the last byte (their throttle sleeps).
        async def idle() -> bool:
            return origin.in_flight["/file/busy.bin"] == 0

        await eventually(idle, 10, interval=0.01)
        async with session.get(url) as again:
            assert again.status == 200
            await again.read()
    assert origin.peak_in_flight["/file/busy.bin"] == 2


async def test_change_after_serves_a_new_version_from_then_on(origin: Origin) -> None:
    url = origin.url("/file/ch.bin", size=SIZE, seed=5, change_after=1)
    async with aiohttp.ClientSession() as session:
        async with session.get(url) as resp:
            assert resp.headers["ETag"] == f'"5-{SIZE}-0"'
            assert await resp.read() == payload(SIZE, 5)
        for _ in range(2):
            async with session.get(
                url, headers={"Range": "bytes=0-", "If-Range": '"5-300000-0"'}
            ) as resp:
                # If-Range no longer matches: the whole new version.
                assert resp.status == 200
                assert resp.headers["ETag"] == f'"6-{SIZE}-1"'
                assert await resp.read() == payload(SIZE, 6)


async def test_gzip_serves_encoded_bytes_and_ranges_of_them(origin: Origin) -> None:
    from tests.origins import gzip_payload

    url = origin.url("/file/z.bin", size=SIZE, seed=2, gzip=1)
    encoded = gzip_payload(SIZE, 2)
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        async with session.get(url) as resp:
            assert resp.headers["Content-Encoding"] == "gzip"
            assert await resp.read() == encoded
        async with session.get(url, headers={"Range": "bytes=100-199"}) as resp:
            assert resp.status == 206
            assert resp.headers["Content-Range"] == f"bytes 100-199/{len(encoded)}"
            assert await resp.read() == encoded[100:200]
