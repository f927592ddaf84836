"""Blocking HTTP for tests of processes a user starts by hand (scripts, installs, .pyz):
direct to 127.0.0.1, never through a proxy the environment may name."""

from __future__ import annotations

import subprocess
import time
import urllib.error
import urllib.request

NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def status_once_up(
    url: str, server: subprocess.Popen[str] | subprocess.Popen[bytes], key: str | None = None
) -> int:
    """The status `url` answers once the server listens (30 s at most), with `key` as a
    Bearer key when given; fails at once if the server exits."""
    deadline = time.monotonic() + 30
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    request = urllib.request.Request(url, headers=headers)
    while True:
        assert server.poll() is None, "the server exited"
        try:
            with NO_PROXY.open(request, timeout=2) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as exc:
            return exc.code
        except (urllib.error.URLError, OSError):
            assert time.monotonic() < deadline, f"{url} never answered"
            time.sleep(0.1)
