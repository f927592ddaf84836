"""One frozen Settings object, built by the CLI from flags and PROGRESS_SERVER_* env vars."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


def default_data_dir() -> Path:
    """`$XDG_DATA_HOME/progress-server`, i.e. `~/.local/share/progress-server` by default."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "progress-server"


@dataclass(frozen=True)
class Settings:
    data_dir: Path = field(default_factory=default_data_dir)
    host: str = "127.0.0.1"
    port: int = 8000
    max_concurrent: int = 3
    max_per_host: int = 2
    # Ranged connections one download may use at once (1: never split); a task may ask for
    # its own number with the "segments" field.
    segments: int = 4
    # No segment is ever smaller than this, so a file under twice the size stays on one
    # connection.
    min_segment_size: int = 8 * 1024 * 1024
    # Connections open to one host across all tasks. A task's first connection always
    # opens (so extra connections never keep a queued task from starting); extras wait.
    max_connections_per_host: int = 16
    max_retries: int = 5
    progress_interval: float = 0.25
    # Snapshots of running tasks reach SQLite at most this often, in one transaction.
    snapshot_interval: float = 1.0
    stall_timeout: float = 30.0
    min_speed_bps: float = 0.0
    connect_timeout: float = 30.0
    read_timeout: float = 60.0
    max_size: int | None = None
    min_free_bytes: int = 64 * 1024 * 1024
    speed_limit_mbps: float | None = None
    deny_private_networks: bool = False
    # With deny_private_networks: networks still allowed (e.g. a NAS), as CIDR strings.
    allow_networks: tuple[str, ...] = ()
    # Fetch only from this machine, resolving no names (tests, fuzzing, sandboxes).
    loopback_only: bool = False
    max_processing: int = 1
    on_complete: tuple[str, ...] = ()
    hook_timeout: float = 60.0
    webhook_url: str | None = None
    webhook_secret: str | None = None
    metrics_loopback: bool = False
    log_format: str = "text"
    max_body_bytes: int = 64 * 1024
    # Frames one WebSocket may have waiting before it is closed with 1013 (progress frames
    # are coalesced per task, so mostly lifecycle events count); tests lower it.
    ws_queue_limit: int = 1000
    # Backoff base for automatic retries; tests shorten it.
    retry_base_delay: float = 1.0
    retry_max_delay: float = 60.0

    @property
    def db_path(self) -> Path:
        return self.data_dir / "progress.db"

    @property
    def downloads_dir(self) -> Path:
        return self.data_dir / "downloads"
