"""The command line: `serve`, and `keys` to manage API keys.

Every option has help text and an environment variable `PROGRESS_SERVER_<FLAG>`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import MISSING, Field, fields
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

import click

from progress_server import __version__
from progress_server.settings import OPTION, Option, Settings

ENV = "PROGRESS_SERVER_"
SETTING_TYPES = get_type_hints(Settings)
SETTING_FIELDS = {f.name: f for f in fields(Settings)}


def _env(flag: str) -> str:
    return ENV + flag.upper().replace("-", "_")


def _click_type(hint: Any, how: Option) -> Any:
    """The click type of a setting, from its annotation (`int | None` counts as int)."""
    if get_origin(hint) is tuple:
        # Typed as strings: one per --flag, or one that `parse` splits.
        return click.STRING
    kind = next((arg for arg in get_args(hint) if arg is not type(None)), hint)
    if kind is Path:
        return click.Path(file_okay=False, path_type=Path)
    if how.choices:
        return click.Choice(how.choices)
    if kind is int and (how.minimum is not None or how.maximum is not None):
        low = None if how.minimum is None else int(how.minimum)
        high = None if how.maximum is None else int(how.maximum)
        return click.IntRange(low, high)
    if kind is float and (how.minimum is not None or how.maximum is not None):
        return click.FloatRange(how.minimum, how.maximum, min_open=how.minimum_open)
    return {int: click.INT, float: click.FLOAT}.get(kind, click.STRING)


def _parsed(setting: Field[Any], parse: Callable[[str], Any], repeated: bool) -> Any:
    """A click callback: each typed value through `parse`; nothing typed is the default."""

    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        try:
            if repeated:
                return tuple(parse(each) for each in value)
            return parse(value) if value else setting.default
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from exc

    return callback


def setting_option(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The click option of one Settings field, built from its `option(...)` metadata: flag,
    help, range or choices, `PROGRESS_SERVER_<FLAG>` and the default, all from there."""
    setting = SETTING_FIELDS[name]
    how: Option = setting.metadata[OPTION]
    hint = SETTING_TYPES[name]
    flag = how.flag or name.replace("_", "-")
    kwargs: dict[str, Any] = {
        "help": how.help,
        "envvar": _env(flag),
        "show_envvar": True,
        "metavar": how.metavar,
    }
    if hint is bool:
        kwargs["is_flag"] = True
    else:
        kwargs["type"] = _click_type(hint, how)
    if setting.default_factory is not MISSING:
        kwargs["default"] = setting.default_factory
        kwargs["show_default"] = how.default_text
    elif how.parse is None:
        # Only here: a parsed setting's callback turns "nothing typed" into the field's
        # default, which is no value one could type (a tuple, None).
        kwargs["default"] = setting.default
        kwargs["show_default"] = setting.default is not None and hint is not bool
    if how.default_text and setting.default_factory is MISSING:
        # A default decided at start-up (from other settings): said in words.
        kwargs["show_default"] = how.default_text
    if how.repeatable:
        kwargs["multiple"] = True
    if how.parse is not None:
        kwargs["callback"] = _parsed(setting, how.parse, how.repeatable)
    return click.option(f"--{flag}", name, **kwargs)


def serve_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Every Settings field that has `option(...)` metadata, in field order."""
    for setting in reversed(fields(Settings)):
        if OPTION in setting.metadata:
            func = setting_option(setting.name)(func)
    return func


data_dir_option = setting_option("data_dir")
database_option = setting_option("database")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="progress-server")
def main() -> None:
    """progress-server: a self-hosted download server with live progress."""


@main.command()
@serve_options
def serve(**options: Any) -> None:
    """Run the server until SIGTERM or Ctrl-C."""
    from urllib.parse import urlsplit

    from aiohttp import web

    from progress_server import logs
    from progress_server.app import StartupError, create_app
    from progress_server.datalock import DataDirBusy, DataDirLock

    settings = Settings(**options)
    # A database password must never reach a log line, whatever prints the URL.
    database_password = urlsplit(settings.database).password if settings.database else None
    logs.configure(settings.log_format, secrets=[settings.webhook_secret, database_password])
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


def _with_store(data_dir: Path, database: str | None, action: Any) -> Any:
    """Run `action(store)` on the server's store: SQLite in DATA_DIR, or the cluster's
    PostgreSQL database with --database."""
    from progress_server.node import NodeUnavailable, opened_node

    async def run() -> Any:
        settings = Settings(data_dir=data_dir, database=database)
        async with opened_node(settings, serving=False) as node:
            return await action(node.store)

    try:
        return asyncio.run(run())
    except NodeUnavailable as exc:
        raise click.ClickException(str(exc)) from exc


@keys.command("create")
@click.argument("name")
@data_dir_option
@database_option
@click.option("--admin", is_flag=True, help="The key sees and controls every task.")
def keys_create(name: str, data_dir: Path, database: str | None, admin: bool) -> None:
    """Create a key called NAME and print it (the last line of output)."""
    from progress_server.auth import generate_key, hash_key

    key = generate_key()

    async def create(store: Any) -> None:
        existing = {row.name for row in await store.list_keys()}
        if name in existing:
            raise click.ClickException(f"a key called {name!r} already exists")
        await store.create_key(name, hash_key(key), admin)

    _with_store(data_dir, database, create)
    click.echo(f"Created {'admin ' if admin else ''}key {name!r}. It is shown only once:", err=True)
    click.echo(key)


@keys.command("list")
@data_dir_option
@database_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def keys_list(data_dir: Path, database: str | None, as_json: bool) -> None:
    """List keys (names and dates, never the keys themselves)."""
    from progress_server.models import iso_utc

    rows = _with_store(data_dir, database, lambda store: store.list_keys())
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
@database_option
def keys_revoke(name: str, data_dir: Path, database: str | None) -> None:
    """Revoke the key called NAME; it stops working at once (on every node of a cluster
    within a second)."""
    if not _with_store(data_dir, database, lambda store: store.revoke_key(name)):
        raise click.ClickException(f"no active key called {name!r}")
    click.echo(f"Revoked key {name!r}.")


# The client-side commands (add, ls, watch, ...) live in remote_cli.py; registered here so
# that one `progress-server` program has them all.
from progress_server import remote_cli  # noqa: E402

remote_cli.register(main)
