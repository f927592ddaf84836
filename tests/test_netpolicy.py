"""The network policy: http(s) only, at most 10 redirects, and (when asked) no private
addresses, checked after DNS and on every redirect hop."""

from __future__ import annotations

import ipaddress
import socket

import pytest
from aiohttp import web

from progress_server.netpolicy import is_private
from tests.conftest import MakeApi
from tests.enginekit import TinyOrigin, downloaded, sha256_file
from tests.origins import Origin, payload_sha256


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",  # cloud metadata
        "100.64.0.1",  # carrier-grade NAT
        "0.0.0.0",
        "224.0.0.1",
        "::1",
        "fe80::1",
        "fd00:ec2::254",  # AWS metadata over IPv6
        "::ffff:127.0.0.1",  # IPv4-mapped loopback
    ],
)
def test_private_and_local_addresses(address: str) -> None:
    assert is_private(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111"])
def test_public_addresses(address: str) -> None:
    assert not is_private(ipaddress.ip_address(address))


async def test_loopback_literal_is_refused(make_api: MakeApi, origin: Origin) -> None:
    api = await make_api(deny_private_networks=True)
    task = await api.submit(origin.url("/file/a.bin", size=1000))
    failed = await api.wait_for(task["task_id"], "failed")
    assert failed["error"]["type"] == "invalid_url"
    assert "127.0.0.1" in failed["error"]["message"]
    assert origin.count("/file/a.bin") == 0


async def test_a_name_resolving_to_loopback_is_refused(make_api: MakeApi, origin: Origin) -> None:
    api = await make_api(deny_private_networks=True)
    url = origin.url("/file/b.bin", size=1000).replace("127.0.0.1", "localhost")
    task = await api.submit(url)
    failed = await api.wait_for(task["task_id"], "failed")
    assert failed["error"]["type"] == "invalid_url"
    assert "localhost" in failed["error"]["message"]
    assert origin.count("/file/b.bin") == 0


async def test_off_by_default_for_self_hosting(make_api: MakeApi, origin: Origin) -> None:
    api = await make_api()
    url = origin.url("/file/c.bin", size=1000, seed=1).replace("127.0.0.1", "localhost")
    done = await api.wait_for((await api.submit(url))["task_id"], "completed")
    assert sha256_file(downloaded(api, done)) == payload_sha256(1000, 1)


async def test_allowed_network_passes(make_api: MakeApi, origin: Origin) -> None:
    api = await make_api(deny_private_networks=True, allow_networks=("127.0.0.0/8",))
    task = await api.submit(origin.url("/file/d.bin", size=1000, seed=2))
    done = await api.wait_for(task["task_id"], "completed")
    assert sha256_file(downloaded(api, done)) == payload_sha256(1000, 2)


def _redirect_to(location: str) -> TinyOrigin:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=302, headers={"Location": location})

    return TinyOrigin(handler)


async def test_a_redirect_to_the_metadata_service_is_refused(make_api: MakeApi) -> None:
    # Our own origin is allowed; where it redirects to is checked again.
    api = await make_api(deny_private_networks=True, allow_networks=("127.0.0.1",))
    async with _redirect_to("http://169.254.169.254/latest/meta-data/") as tiny:
        task = await api.submit(tiny.url("/innocent.bin"))
        failed = await api.wait_for(task["task_id"], "failed")
        assert len(tiny.requests) == 1
    assert failed["error"]["type"] == "invalid_url"
    assert "169.254.169.254" in failed["error"]["message"]


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="needs the IPv6 loopback address")
async def test_a_redirect_to_a_name_resolving_to_loopback_is_refused(
    make_api: MakeApi, origin: Origin
) -> None:
    # The first hop (::1) is allowed; the name it redirects to resolves to 127.0.0.1.
    api = await make_api(deny_private_networks=True, allow_networks=("::1",))

    async def handler(request: web.Request) -> web.Response:
        location = origin.url("/file/x.bin", size=1000).replace("127.0.0.1", "localhost")
        return web.Response(status=302, headers={"Location": location})

    async with TinyOrigin(handler, host="::1") as tiny:
        task = await api.submit(tiny.url("/x.bin"))
        failed = await api.wait_for(task["task_id"], "failed")
        assert len(tiny.requests) == 1
    assert failed["error"]["type"] == "invalid_url"
    assert "localhost (127.0.0.1)" in failed["error"]["message"]
    assert origin.count("/file/x.bin") == 0


async def test_a_redirect_to_another_scheme_is_refused(make_api: MakeApi) -> None:
    api = await make_api()
    async with _redirect_to("file:///etc/passwd") as tiny:
        task = await api.submit(tiny.url("/x.bin"))
        failed = await api.wait_for(task["task_id"], "failed")
    assert failed["error"]["type"] == "invalid_url"
    assert "file" in failed["error"]["message"]


async def test_ten_redirects_are_followed(make_api: MakeApi, origin: Origin) -> None:
    api = await make_api()
    task = await api.submit(origin.url("/file/r.bin", size=1000, seed=3, redirect=10))
    done = await api.wait_for(task["task_id"], "completed")
    assert sha256_file(downloaded(api, done)) == payload_sha256(1000, 3)
    assert done["filename"] == "r.bin"


async def test_eleven_redirects_are_too_many(make_api: MakeApi, origin: Origin) -> None:
    api = await make_api()
    task = await api.submit(origin.url("/file/r.bin", size=1000, redirect=11))
    failed = await api.wait_for(task["task_id"], "failed")
    assert failed["error"]["type"] == "http_error"
    assert "redirects" in failed["error"]["message"]


async def test_a_redirect_loop_fails_cleanly(make_api: MakeApi, origin: Origin) -> None:
    api = await make_api()
    task = await api.submit(origin.url("/file/loop.bin", redirect_loop=1))
    failed = await api.wait_for(task["task_id"], "failed")
    assert failed["error"]["type"] == "http_error"
    assert "redirect" in failed["error"]["message"]
    # The loop was given up after ten hops, not retried.
    assert len(origin.requests) == 11
