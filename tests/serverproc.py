"""Run the real progress-server as a subprocess, the way a user would.

Everything here is synchronous: the calls are short, so async tests may use them
directly (blocking the loop for a moment is harmless there).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Self

REPO_ROOT = Path(__file__).resolve().parent.parent

# urllib honours http_proxy & co.; a proxy must never see requests to our own child.
_NO_PROXY_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (the usual bind-to-0 trick; racy but fine)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _child_env(extra: Mapping[str, str] | None) -> dict[str, str]:
    env = dict(os.environ)
    # The child must import the working tree's package even though its cwd is elsewhere.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    # Unbuffered, so the log file is current when a test fails and prints its tail.
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def create_key(
    data_dir: Path, name: str, admin: bool = False, env: Mapping[str, str] | None = None
) -> str:
    """Run `keys create` and return the new API key (the last line of stdout)."""
    cmd = [sys.executable, "-m", "progress_server", "keys", "create", name]
    cmd += ["--data-dir", str(data_dir)]
    if admin:
        cmd.append("--admin")
    data_dir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        cwd=data_dir,
        env=_child_env(env),
        timeout=60,
        check=False,
    )
    lines = [line.strip() for line in proc.stdout.splitlines() if line.strip()]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(
            f"{' '.join(cmd)} exited {proc.returncode}\n"
            f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
    return lines[-1]


class ServerProcess:
    """`python -m progress_server serve` on a free port, logging to DATA_DIR/server.log.

    The port is chosen once, so `stop()` then `start()` brings the server back at the
    same URL (for restart/recovery tests).
    """

    def __init__(
        self,
        data_dir: Path,
        *extra_args: str,
        env: Mapping[str, str] | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.data_dir = data_dir
        self.extra_args = list(extra_args)
        self.env = dict(env or {})
        self.host = host
        self.port = free_port(host)
        self.log_path = data_dir / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}/api/progress/ws"

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "progress_server",
            "serve",
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--data-dir",
            str(self.data_dir),
            *self.extra_args,
        ]

    def start(self, timeout: float = 15) -> None:
        """Launch the server and wait until /healthz answers 200."""
        if self.running:
            raise RuntimeError("server already running")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # Append, so a restarted server's log follows the previous run's.
        self._log_file = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            cwd=self.data_dir,
            env=_child_env(self.env),
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                self._close_log()
                raise RuntimeError(f"server exited with {code} during startup\n{self.log_tail()}")
            if self._healthy():
                return
            if time.monotonic() > deadline:
                self.kill()
                raise TimeoutError(f"/healthz not 200 within {timeout}s\n{self.log_tail()}")
            time.sleep(0.05)

    def _healthy(self) -> bool:
        try:
            with _NO_PROXY_OPENER.open(f"{self.base_url}/healthz", timeout=1) as resp:
                return int(resp.status) == 200
        except (urllib.error.URLError, OSError):
            return False

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> int:
        """Send `sig` and return the exit code; kill and raise if it outlives `timeout`."""
        if self.proc is None:
            raise RuntimeError("server was never started")
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise TimeoutError(
                    f"server ignored signal {sig} for {timeout}s; killed\n{self.log_tail()}"
                ) from None
        self._close_log()
        return self.proc.returncode

    def kill(self) -> int:
        """SIGKILL (no cleanup at all, like a crash) and reap; returns the exit code."""
        if self.proc is None:
            raise RuntimeError("server was never started")
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._close_log()
        return self.proc.returncode

    def restart(self, timeout: float = 15) -> None:
        self.stop()
        self.start(timeout)

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        tail = self.log_text().splitlines()[-lines:]
        return "--- server.log (tail) ---\n" + "\n".join(tail)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self.running:
            self._close_log()
            return
        try:
            self.stop()
        except TimeoutError:
            # stop() already killed it; don't mask the test's own exception with ours.
            if exc is None:
                raise
