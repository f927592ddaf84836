"""One frozen Settings object; each field that `serve` offers says here, once, how it is given.

A field's `option(...)` metadata holds its help text, its flag (when not `--field-name`), the
range or choices it accepts and how one typed value becomes the setting. cli.py builds the
click options, their `PROGRESS_SERVER_<FLAG>` environment variables and their defaults from
it; nothing about a setting is written twice.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OPTION = "option"


@dataclass(frozen=True)
class Option:
    """How one setting is given on the `serve` command line."""

    help: str
    # The flag without its dashes; the field's name with dashes when None.
    flag: str | None = None
    minimum: float | None = None
    maximum: float | None = None
    # True: the minimum itself is refused (a speed limit of 0 is no limit at all).
    minimum_open: bool = False
    choices: tuple[str, ...] = ()
    metavar: str | None = None
    # Given once per value (`--allow-network A --allow-network B`); the environment variable
    # takes the values separated by spaces.
    repeatable: bool = False
    # One typed value (of a repeatable option: each one) to the setting's value; ValueError
    # when the value is refused.
    parse: Callable[[str], Any] | None = None
    # What --help shows as the default when it is computed at start-up.
    default_text: str | None = None


def option(help: str, **how: Any) -> Mapping[str, Option]:
    """Field metadata: this setting is a `serve` option (see `Option` for `how`)."""
    return {OPTION: Option(help, **how)}


def default_data_dir() -> Path:
    """`$XDG_DATA_HOME/progress-server`, i.e. `~/.local/share/progress-server` by default."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "progress-server"


def command_line(value: str) -> tuple[str, ...]:
    """A command line split as a POSIX shell would, but never run by one."""
    return tuple(shlex.split(value))


def http_url(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise ValueError("must be an http:// or https:// URL")
    return value


def network(value: str) -> str:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError as exc:
        raise ValueError(f"{value!r} is not an address or CIDR network") from exc
    return value


def postgres_url(value: str) -> str:
    if not value.startswith(("postgresql://", "postgres://")):
        raise ValueError("must be a postgresql:// URL")
    return value


NODE_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def node_name(value: str) -> str:
    if not NODE_ID_PATTERN.fullmatch(value):
        raise ValueError(
            "1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return value


@dataclass(frozen=True)
class Settings:
    # -- `serve` options, in the order `serve --help` lists them --------------------------
    host: str = field(default="127.0.0.1", metadata=option("Address to listen on."))
    port: int = field(
        default=8000, metadata=option("TCP port to listen on.", minimum=0, maximum=65535)
    )
    data_dir: Path = field(
        default_factory=default_data_dir,
        metadata=option(
            "Folder for the SQLite database, the node's id and (unless --downloads-dir) "
            "the downloaded files.",
            default_text="$XDG_DATA_HOME/progress-server or ~/.local/share/progress-server",
        ),
    )
    downloads_folder: Path | None = field(
        default=None,
        metadata=option(
            "Folder for the downloaded files. Every node of a cluster points at the same "
            "shared folder.",
            flag="downloads-dir",
            default_text="DATA_DIR/downloads",
        ),
    )
    database: str | None = field(
        default=None,
        metadata=option(
            "Cluster mode: keep tasks, events, keys and sessions in this PostgreSQL database "
            "(postgresql://USER@HOST:PORT/DB), shared by every node (default: SQLite in "
            "DATA_DIR). Needs the `postgres` extra.",
            metavar="URL",
            parse=postgres_url,
        ),
    )
    node_id: str | None = field(
        default=None,
        metadata=option(
            "This node's name in a cluster: on task records, /healthz and /metrics.",
            metavar="ID",
            parse=node_name,
            default_text="made once and kept in DATA_DIR",
        ),
    )
    lease_timeout: float = field(
        default=15.0,
        metadata=option(
            "Cluster mode: seconds a node that stops answering keeps its tasks before "
            "another node takes them over.",
            minimum=1,
            maximum=3600,
        ),
    )
    max_concurrent: int = field(
        default=3,
        metadata=option(
            "Downloads running at once; the rest wait as pending, in order.",
            minimum=1,
            maximum=1000,
        ),
    )
    max_per_host: int = field(
        default=2,
        metadata=option("Downloads running at once from one host.", minimum=1, maximum=1000),
    )
    segments: int = field(
        default=4,
        metadata=option(
            "Ranged connections one download may use at once, each fetching its own part of "
            "the file (1: one connection). Only files the origin serves in ranges with a "
            "validator, and at least twice --min-segment-size, are split. A task may set its "
            "own 'segments'.",
            minimum=1,
            maximum=16,
        ),
    )
    min_segment_size: int = field(
        default=8 * 1024 * 1024,
        metadata=option("Bytes; no part of a split download is smaller than this.", minimum=65536),
    )
    # A task's first connection always opens, so extra connections never keep a queued task
    # from starting; only the extras wait for room.
    max_connections_per_host: int = field(
        default=16,
        metadata=option(
            "Connections open to one host across all downloads. The first connection of a "
            "download always opens; only its extra connections wait for room.",
            minimum=1,
            maximum=1000,
        ),
    )
    max_retries: int = field(
        default=5,
        metadata=option(
            "Automatic retries of network errors, timeouts, 408, 429 and 5xx.",
            minimum=0,
            maximum=100,
        ),
    )
    progress_interval: float = field(
        default=0.25,
        metadata=option("Seconds between progress events of one task.", minimum=0.01, maximum=60),
    )
    stall_timeout: float = field(
        default=30.0,
        metadata=option(
            "Seconds without a byte before an attempt is aborted as a timeout.",
            minimum=0.1,
            maximum=3600,
        ),
    )
    connect_timeout: float = field(
        default=30.0,
        metadata=option(
            "Seconds to wait for a connection to the origin.", minimum=0.1, maximum=3600
        ),
    )
    max_size: int | None = field(
        default=None,
        metadata=option("Largest file accepted, in bytes (default: no limit).", minimum=1),
    )
    read_timeout: float = field(
        default=60.0,
        metadata=option(
            "Seconds to wait for the origin's response headers or any single read.",
            minimum=0.1,
            maximum=3600,
        ),
    )
    min_speed_bps: float = field(
        default=0.0,
        metadata=option(
            "Bytes per second; an attempt slower than this for --stall-timeout seconds is "
            "aborted as a timeout and retried (0: off).",
            flag="min-speed",
            minimum=0,
        ),
    )
    speed_limit_mbps: float | None = field(
        default=None,
        metadata=option(
            "Total download speed of the server in MB/s (10^6 bytes), shared by all tasks "
            "(default: no limit). A task can also set its own max_speed_mbps.",
            flag="speed-limit",
            minimum=0,
            minimum_open=True,
        ),
    )
    min_free_bytes: int = field(
        default=64 * 1024 * 1024,
        metadata=option(
            "Bytes that must stay free on the downloads disk; a download that would eat "
            "into them fails as disk_error, keeping its partial file.",
            flag="min-free-space",
            minimum=0,
        ),
    )
    deny_private_networks: bool = field(
        default=False,
        metadata=option(
            "Refuse URLs that lead (after DNS and on every redirect) to loopback, private, "
            "link-local or cloud metadata addresses. Turn on when untrusted users submit URLs."
        ),
    )
    # With deny_private_networks: networks still allowed (e.g. a NAS), as CIDR strings.
    allow_networks: tuple[str, ...] = field(
        default=(),
        metadata=option(
            "With --deny-private-networks, still allow this address or CIDR network "
            "(repeatable; the env var takes several separated by spaces).",
            flag="allow-network",
            repeatable=True,
            parse=network,
        ),
    )
    # Fetch only from this machine, resolving no names (tests, fuzzing, sandboxes).
    loopback_only: bool = field(
        default=False,
        metadata=option(
            "Download only from this machine (127.0.0.0/8, ::1, localhost), redirects "
            "included, without resolving any other name: for tests, fuzzing and sandboxes."
        ),
    )
    max_processing: int = field(
        default=1,
        metadata=option(
            "Transcodes running at once (probing and checksums never wait for one).",
            minimum=1,
            maximum=64,
        ),
    )
    on_complete: tuple[str, ...] = field(
        default=(),
        metadata=option(
            "Command run when a task completes or finally fails, e.g. 'notify.sh --loud'. "
            "Split like a shell would (quotes work) but run without one: no pipes, no $VARS. "
            "It gets PROGRESS_SERVER_TASK_ID, _STATE, _FILE, _FILENAME, _TASK_URL, _SIZE_MB, "
            "_DURATION_SECONDS, _ERROR_TYPE, _ERROR_MESSAGE and _EVENT (the event JSON) in "
            "its environment.",
            metavar="CMD",
            parse=command_line,
        ),
    )
    hook_timeout: float = field(
        default=60.0,
        metadata=option(
            "Seconds an --on-complete command may run, and a --webhook request may take, "
            "before it is abandoned.",
            minimum=0.1,
            maximum=86400,
        ),
    )
    webhook_url: str | None = field(
        default=None,
        metadata=option(
            "POST the download.completed / final download.error event JSON here; retried "
            "with backoff, each delivery recorded as a download.hook event.",
            flag="webhook",
            metavar="URL",
            parse=http_url,
        ),
    )
    webhook_secret: str | None = field(
        default=None,
        metadata=option(
            "Sign webhooks: X-Progress-Signature: sha256=<hex HMAC-SHA256 of the body>. "
            "Prefer the environment variable: a flag shows in the process list.",
            metavar="SECRET",
        ),
    )
    metrics_loopback: bool = field(
        default=False,
        metadata=option(
            "Let loopback addresses scrape /metrics without a key (elsewhere: an admin key)."
        ),
    )
    log_format: str = field(
        default="text",
        metadata=option(
            "Log lines for people (text) or machines (json).", choices=("text", "json")
        ),
    )

    # -- not on the command line ----------------------------------------------------------
    # Snapshots of running tasks reach the database at most this often, in one transaction.
    snapshot_interval: float = 1.0
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
        return self.downloads_folder or self.data_dir / "downloads"
