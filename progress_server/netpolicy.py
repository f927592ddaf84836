"""Which origins a download may reach: http(s) only, and optionally public addresses only.

With `--deny-private-networks` a URL must not lead the server to its own machine, its
LAN or a cloud metadata service. Checking the URL text is not enough: a public name can
resolve to 127.0.0.1, and a public origin can redirect to 169.254.169.254. So host names
are checked on the addresses DNS returned, by the resolver the connection itself uses
(no gap between check and connect), and literal addresses are checked on every hop.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

from progress_server.settings import Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

ALLOWED_SCHEMES = frozenset({"http", "https"})


class PolicyViolation(Exception):
    """The URL is not one this server may fetch; reported as `invalid_url`."""


def parse_networks(values: Iterable[str]) -> tuple[IPNetwork, ...]:
    """`--allow-network` values (`192.168.1.10`, `10.0.0.0/8`) as networks; ValueError if bad."""
    return tuple(ipaddress.ip_network(v.strip(), strict=False) for v in values)


class NetworkPolicy:
    def __init__(
        self, deny_private: bool, allowed: Iterable[IPNetwork] = (), loopback_only: bool = False
    ) -> None:
        self.deny_private = deny_private
        self.allowed = tuple(allowed)
        # --loopback-only: this machine only, and no name is ever looked up (not even the
        # DNS query may leave), so only literal loopback addresses and `localhost` pass.
        self.loopback_only = loopback_only

    def check_url(self, url: URL) -> None:
        """Refuse a URL by its scheme, or by its host when that is a literal address."""
        if url.scheme not in ALLOWED_SCHEMES:
            raise PolicyViolation(f"only http and https URLs can be downloaded, not {url.scheme!r}")
        host = url.raw_host
        if not host:
            raise PolicyViolation("the URL names no host")
        address = _literal_address(host)
        if self.loopback_only and address is None and host.lower() != "localhost":
            raise PolicyViolation(f"{host} is not a loopback address (--loopback-only)")
        if address is not None:
            self.check_address(address, host)

    def check_address(self, address: IPAddress, host: str) -> None:
        if self.loopback_only and not _unmapped(address).is_loopback:
            raise PolicyViolation(f"{host} is not a loopback address (--loopback-only)")
        if not self.deny_private or not is_private(address):
            return
        if any(address in net for net in self.allowed if net.version == address.version):
            return
        shown = host if host == str(address) else f"{host} ({address})"
        raise PolicyViolation(f"{shown} is a private or local address, which this server refuses")


def policy_for(settings: Settings) -> NetworkPolicy:
    return NetworkPolicy(
        settings.deny_private_networks,
        parse_networks(settings.allow_networks),
        loopback_only=settings.loopback_only,
    )


def is_private(address: IPAddress) -> bool:
    """Loopback, private, link-local (metadata), shared, reserved, multicast or unspecified."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return not address.is_global or address.is_multicast


def _unmapped(address: IPAddress) -> IPAddress:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _literal_address(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


class PolicyResolver(AbstractResolver):
    """Resolves like aiohttp's default resolver, then refuses names with a denied address.

    One denied address refuses the whole name: connecting to "the other one" would still
    let a hostile DNS answer choose.
    """

    def __init__(self, policy: NetworkPolicy, inner: AbstractResolver | None = None) -> None:
        self.policy = policy
        self._inner = inner or DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        for result in results:
            address = ipaddress.ip_address(result["host"].split("%", 1)[0])
            self.policy.check_address(address, host)
        return results

    async def close(self) -> None:
        await self._inner.close()
