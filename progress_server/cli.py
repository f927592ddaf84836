"""The command line: `serve`, and `keys` to manage API keys.

Every option has help text and an environment variable `PROGRESS_SERVER_<FLAG>`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from progress_server import __version__
from progress_server.settings import Settings, default_data_dir

ENV = "PROGRESS_SERVER_"


def _env(flag: str) -> str:
    return ENV + flag.upper().replace("-", "_")


def _argv(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[str, ...]:
    """A command line split as a POSIX shell would, but never run by one."""
    try:
        return tuple(shlex.split(value)) if value else ()
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


def _http_url(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value and not value.startswith(("http://", "https://")):
        raise click.BadParameter("must be an http:// or https:// URL")
    return value or None


def serve_option(
    flag: str, *decls: str, **kwargs: Any
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """A `serve` option that also reads `PROGRESS_SERVER_<FLAG>` and says so in --help."""
    return click.option(flag, *decls, envvar=_env(flag[2:]), show_envvar=True, **kwargs)


def data_dir_option(func: Any) -> Any:
    return click.option(
        "--data-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=default_data_dir,
        envvar=_env("data-dir"),
        show_envvar=True,
        show_default="$XDG_DATA_HOME/progress-server or ~/.local/share/progress-server",
        help="Folder for the SQLite database and the downloaded files.",
    )(func)


def _networks(values: tuple[str, ...]) -> tuple[str, ...]:
    import ipaddress

    for value in values:
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError as exc:
            raise click.BadParameter(f"{value!r} is not an address or CIDR network") from exc
    return tuple(values)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="progress-server")
def main() -> None:
    """progress-server: a self-hosted download server with live progress."""


@main.command()
@serve_option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on.",
)
@serve_option(
    "--port",
    default=8000,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="TCP port to listen on.",
)
@data_dir_option
@serve_option(
    "--max-concurrent",
    default=3,
    show_default=True,
    type=click.IntRange(1, 1000),
    help="Downloads running at once; the rest wait as pending, in order.",
)
@serve_option(
    "--max-per-host",
    default=2,
    show_default=True,
    type=click.IntRange(1, 1000),
    help="Downloads running at once from one host.",
)
@serve_option(
    "--max-retries",
    default=5,
    show_default=True,
    type=click.IntRange(0, 100),
    help="Automatic retries of network errors, timeouts, 408, 429 and 5xx.",
)
@serve_option(
    "--progress-interval",
    default=0.25,
    show_default=True,
    type=click.FloatRange(0.01, 60),
    help="Seconds between progress events of one task.",
)
@serve_option(
    "--stall-timeout",
    default=30.0,
    show_default=True,
    type=click.FloatRange(0.1, 3600),
    help="Seconds without a byte before an attempt is aborted as a timeout.",
)
@serve_option(
    "--connect-timeout",
    default=30.0,
    show_default=True,
    type=click.FloatRange(0.1, 3600),
    help="Seconds to wait for a connection to the origin.",
)
@serve_option(
    "--max-size",
    default=None,
    type=click.IntRange(1),
    help="Largest file accepted, in bytes (default: no limit).",
)
@serve_option(
    "--read-timeout",
    default=60.0,
    show_default=True,
    type=click.FloatRange(0.1, 3600),
    help="Seconds to wait for the origin's response headers or any single read.",
)
@serve_option(
    "--min-speed",
    "min_speed_bps",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0),
    help="Bytes per second; an attempt slower than this for --stall-timeout seconds is "
    "aborted as a timeout and retried (0: off).",
)
@serve_option(
    "--speed-limit",
    "speed_limit_mbps",
    default=None,
    type=click.FloatRange(0, min_open=True),
    help="Total download speed of the server in MB/s (10^6 bytes), shared by all tasks "
    "(default: no limit). A task can also set its own max_speed_mbps.",
)
@serve_option(
    "--min-free-space",
    "min_free_bytes",
    default=64 * 1024 * 1024,
    show_default=True,
    type=click.IntRange(0),
    help="Bytes that must stay free on the downloads disk; a download that would eat into "
    "them fails as disk_error, keeping its partial file.",
)
@serve_option(
    "--deny-private-networks",
    is_flag=True,
    help="Refuse URLs that lead (after DNS and on every redirect) to loopback, private, "
    "link-local or cloud metadata addresses. Turn on when untrusted users submit URLs.",
)
@serve_option(
    "--allow-network",
    "allow_networks",
    multiple=True,
    callback=lambda _ctx, _param, value: _networks(value),
    help="With --deny-private-networks, still allow this address or CIDR network "
    "(repeatable; the env var takes several separated by spaces).",
)
@serve_option(
    "--loopback-only",
    is_flag=True,
    help="Download only from this machine (127.0.0.0/8, ::1, localhost), redirects "
    "included, without resolving any other name: for tests, fuzzing and sandboxes.",
)
@serve_option(
    "--max-processing",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Transcodes running at once (probing and checksums never wait for one).",
)
@serve_option(
    "--on-complete",
    metavar="CMD",
    callback=_argv,
    help="Command run when a task completes or finally fails, e.g. 'notify.sh --loud'. "
    "Split like a shell would (quotes work) but run without one: no pipes, no $VARS. "
    "It gets PROGRESS_SERVER_TASK_ID, _STATE, _FILE, _FILENAME, _TASK_URL, _SIZE_MB, "
    "_DURATION_SECONDS, _ERROR_TYPE, _ERROR_MESSAGE and _EVENT (the event JSON) in its "
    "environment.",
)
@serve_option(
    "--hook-timeout",
    default=60.0,
    show_default=True,
    type=click.FloatRange(0.1, 86400),
    help="Seconds an --on-complete command may run, and a --webhook request may take, "
    "before it is abandoned.",
)
@serve_option(
    "--webhook",
    "webhook_url",
    metavar="URL",
    callback=_http_url,
    help="POST the download.completed / final download.error event JSON here; retried "
    "with backoff, each delivery recorded as a download.hook event.",
)
@serve_option(
    "--webhook-secret",
    metavar="SECRET",
    help="Sign webhooks: X-Progress-Signature: sha256=<hex HMAC-SHA256 of the body>. "
    "Prefer the environment variable: a flag shows in the process list.",
)
@serve_option(
    "--metrics-loopback",
    is_flag=True,
    help="Let loopback addresses scrape /metrics without a key (elsewhere: an admin key).",
)
@serve_option(
    "--log-format",
    default="text",
    show_default=True,
    type=click.Choice(["text", "json"]),
    help="Log lines for people (text) or machines (json).",
)
def serve(**options: Any) -> None:
    """Run the server until SIGTERM or Ctrl-C."""
    from aiohttp import web

    from progress_server import logs
    from progress_server.app import StartupError, create_app
    from progress_server.datalock import DataDirBusy, DataDirLock

    settings = Settings(**options)
    logs.configure(settings.log_format, secrets=[settings.webhook_secret])
    log = logging.getLogger("progress_server")
    # Before anything is opened: a second server must not run recovery on a live one's tasks.
    lock = DataDirLock(settings.data_dir)
    try:
        lock.acquire()
    except DataDirBusy as exc:
        raise click.ClickException(str(exc)) from exc
    log.info("serving on http://%s:%d, data in %s", settings.host, settings.port, settings.data_dir)
    with lock:
        try:
            web.run_app(
                create_app(settings),
                host=settings.host,
                port=settings.port,
                print=None,
                access_log=None,
                shutdown_timeout=5.0,
            )
        except StartupError as exc:
            # Everything opened was closed again; the operator needs the reason, not a trace.
            raise click.ClickException(str(exc)) from exc
    log.info("stopped")


@main.group()
def keys() -> None:
    """Create, list and revoke API keys (stored hashed)."""


def _with_store(data_dir: Path, action: Any) -> Any:
    from progress_server.store import Store

    async def run() -> Any:
        store = Store(Settings(data_dir=data_dir).db_path)
        await store.open()
        try:
            return await action(store)
        finally:
            await store.close()

    return asyncio.run(run())


@keys.command("create")
@click.argument("name")
@data_dir_option
@click.option("--admin", is_flag=True, help="The key sees and controls every task.")
def keys_create(name: str, data_dir: Path, admin: bool) -> None:
    """Create a key called NAME and print it (the last line of output)."""
    from progress_server.auth import generate_key, hash_key

    key = generate_key()

    async def create(store: Any) -> None:
        existing = {row.name for row in await store.list_keys()}
        if name in existing:
            raise click.ClickException(f"a key called {name!r} already exists")
        await store.create_key(name, hash_key(key), admin)

    _with_store(data_dir, create)
    click.echo(f"Created {'admin ' if admin else ''}key {name!r}. It is shown only once:", err=True)
    click.echo(key)


@keys.command("list")
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def keys_list(data_dir: Path, as_json: bool) -> None:
    """List keys (names and dates, never the keys themselves)."""
    from progress_server.models import iso_utc

    rows = _with_store(data_dir, lambda store: store.list_keys())
    entries = [
        {
            "name": row.name,
            "admin": row.is_admin,
            "created_at": iso_utc(row.created_at),
            "revoked_at": iso_utc(row.revoked_at) if row.revoked_at else None,
        }
        for row in rows
    ]
    if as_json:
        click.echo(json.dumps(entries, indent=2))
        return
    for e in entries:
        status = f"revoked {e['revoked_at']}" if e["revoked_at"] else "active"
        role = "admin" if e["admin"] else "user"
        click.echo(f"{e['name']:<24} {role:<6} created {e['created_at']}  {status}")


@keys.command("revoke")
@click.argument("name")
@data_dir_option
def keys_revoke(name: str, data_dir: Path) -> None:
    """Revoke the key called NAME; it stops working at once."""
    if not _with_store(data_dir, lambda store: store.revoke_key(name)):
        raise click.ClickException(f"no active key called {name!r}")
    click.echo(f"Revoked key {name!r}.")


# The client-side commands (add, ls, watch, ...) live in remote_cli.py; registered here so
# that one `progress-server` program has them all.
from progress_server import remote_cli  # noqa: E402

remote_cli.register(main)
