"""Holds every connection a media worker makes to the server's network policy.

yt-dlp fetches pages, manifests, keys and fragments through several HTTP libraries, each
following redirects on its own, so checking the URLs it is handed is not enough. The guard
sits where every one of them ends up: `socket.connect`, which sees the address actually
dialled after DNS and after each redirect (no gap between check and use). Downloads that
yt-dlp would hand to an external program (ffmpeg, rtmpdump, aria2c), which no in-process
check can follow, are refused while the policy is on.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from typing import Any

from yarl import URL

from progress_server.netpolicy import NetworkPolicy, PolicyViolation

# ws(s) is what a few extractors use for live chat; it is held to the same host checks.
_SCHEMES = frozenset({"http", "https", "ws", "wss"})
_plain_getaddrinfo = socket.getaddrinfo


class NetworkGuard:
    """Checks addresses for one worker process; remembers what it refused."""

    def __init__(self, policy: NetworkPolicy) -> None:
        self.policy = policy
        self.refused: list[PolicyViolation] = []

    @property
    def active(self) -> bool:
        return self.policy.deny_private or self.policy.loopback_only

    def refuse(self, message: str) -> PolicyViolation:
        violation = PolicyViolation(message)
        self.refused.append(violation)
        return violation

    def check_url(self, url: str) -> None:
        """Refuse by scheme, or by a literal host, before any request is sent."""
        if not self.active:
            return
        parsed = URL(url)
        if parsed.scheme not in _SCHEMES:
            raise self.refuse(f"media tasks fetch only http(s) URLs, not {parsed.scheme!r}")
        try:
            self.policy.check_url(parsed.with_scheme("http"))
        except PolicyViolation as violation:
            raise self.refuse(str(violation)) from None

    def checked_sockaddr(self, family: int, address: Any) -> Any:
        """The address to dial: `address` once allowed, a name resolved and checked first."""
        if family not in (socket.AF_INET, socket.AF_INET6) or not isinstance(address, tuple):
            return address
        host = str(address[0]).split("%", 1)[0]
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            # connect() given a name would resolve it unseen: resolve it here, check every
            # address, and dial the checked one so DNS cannot answer differently in between.
            self.check_name(host)
            infos = _plain_getaddrinfo(host, address[1], family, socket.SOCK_STREAM)
            for *_, resolved in infos:
                self.checked_sockaddr(family, resolved)
            return (infos[0][4][0], *address[1:]) if infos else address
        try:
            self.policy.check_address(ip, host)
        except PolicyViolation as violation:
            raise self.refuse(str(violation)) from None
        return address

    def check_name(self, host: str) -> None:
        if self.policy.loopback_only and host.lower() != "localhost":
            try:
                ipaddress.ip_address(host.strip("[]"))
            except ValueError:
                raise self.refuse(f"{host} is not a loopback address (--loopback-only)") from None

    def install(self) -> None:
        """Patch this process's sockets and external downloaders (the worker's only)."""
        if not self.active:
            return
        self._guard_sockets()
        self._refuse_external_downloaders()

    def _guard_sockets(self) -> None:
        guard = self
        plain_connect = socket.socket.connect
        plain_connect_ex = socket.socket.connect_ex

        def connect(sock: Any, address: Any) -> None:
            plain_connect(sock, guard.checked_sockaddr(sock.family, address))

        def connect_ex(sock: Any, address: Any) -> int:
            return plain_connect_ex(sock, guard.checked_sockaddr(sock.family, address))

        def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
            # With --loopback-only not even the DNS query may leave the machine.
            if isinstance(host, str | bytes):
                guard.check_name(host.decode() if isinstance(host, bytes) else host)
            return _plain_getaddrinfo(host, *args, **kwargs)

        socket.socket.connect = connect  # type: ignore[method-assign]
        socket.socket.connect_ex = connect_ex  # type: ignore[method-assign]
        socket.getaddrinfo = getaddrinfo

    def _refuse_external_downloaders(self) -> None:
        from yt_dlp.downloader.external import ExternalFD
        from yt_dlp.downloader.rtmp import RtmpFD

        def refused(kind: str) -> Callable[..., bool]:
            def real_download(fd: Any, filename: str, info_dict: dict[str, Any]) -> bool:
                raise self.refuse(
                    f"this stream needs {kind} to fetch it, which the network policy "
                    "(--deny-private-networks) cannot follow"
                )

            return real_download

        ExternalFD.real_download = refused("an external downloader (ffmpeg)")
        RtmpFD.real_download = refused("rtmpdump")
