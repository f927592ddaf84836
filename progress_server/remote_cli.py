"""Commands that talk to a running server: add, ls, show, watch, pause, resume, cancel,
retry, rm. They use `progress_server.client`, like any other Python program would.

People get tables and live bars; scripts get `--json` (the server's records, unchanged) on
stdout. Progress bars and notes go to stderr so that stdout stays parseable.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TextIO, TypeVar

import click
from rich.console import Console

from progress_server.client import (
    ApiError,
    ProgressClient,
    ProgressClientError,
    TaskRecord,
)
from progress_server.live_view import LiveView, follow
from progress_server.models import TaskState
from progress_server.record_text import describe, task_rows

DEFAULT_SERVER = "http://127.0.0.1:8000"
STATES = tuple(state.value for state in TaskState)
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")

T = TypeVar("T")


class Remote:
    """The --server and --api-key a command was given."""

    def __init__(self, server: str, api_key: str | None) -> None:
        self.server = server
        self.api_key = api_key

    def client(self) -> ProgressClient:
        if not self.api_key:
            raise click.UsageError(
                "no API key: pass --api-key or set PROGRESS_SERVER_API_KEY "
                "(create one with `progress-server keys create NAME`)"
            )
        return ProgressClient(self.server, self.api_key)


def remote_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Adds --server and --api-key (and their environment variables) to a command."""
    func = click.option(
        "--api-key",
        envvar="PROGRESS_SERVER_API_KEY",
        show_envvar=True,
        help="API key (see `progress-server keys create`). Prefer the environment "
        "variable: a flag shows in the process list.",
    )(func)
    func = click.option(
        "--server",
        envvar="PROGRESS_SERVER_URL",
        show_envvar=True,
        default=DEFAULT_SERVER,
        show_default=True,
        help="Base URL of the server, e.g. https://downloads.example.com.",
    )(func)
    return func


def json_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--json", "as_json", is_flag=True, help="Print the server's JSON records instead."
    )(func)


def run(work: Callable[[ProgressClient], Coroutine[Any, Any, T]], remote: Remote) -> T:
    """Run one command's async work with a client, turning failures into clear messages."""

    async def main() -> T:
        async with remote.client() as client:
            return await work(client)

    try:
        return asyncio.run(main())
    except ApiError as exc:
        raise click.ClickException(f"{exc.message} ({exc.type})") from exc
    except ProgressClientError as exc:
        raise click.ClickException(str(exc)) from exc


def stderr_console() -> Console:
    return Console(stderr=True, highlight=False)


# -- output ---------------------------------------------------------------------------


def echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


# -- task ids -------------------------------------------------------------------------


async def resolve_ids(client: ProgressClient, given: tuple[str, ...]) -> list[str]:
    """Full task ids for the ids or unique id prefixes the user typed."""
    wanted = [value.strip().lower() for value in given]
    if all(_UUID.match(value) for value in wanted):
        return wanted
    known = [task["task_id"] for task in await client.list()]
    resolved = []
    for value in wanted:
        if _UUID.match(value):
            resolved.append(value)
            continue
        matches = [task_id for task_id in known if task_id.startswith(value)] if value else []
        if not matches:
            raise click.ClickException(f"no task matches {value!r}")
        if len(matches) > 1:
            raise click.ClickException(f"{value!r} matches {len(matches)} tasks; type more of it")
        resolved.append(matches[0])
    return resolved


# -- commands -------------------------------------------------------------------------


@click.command()
@click.argument("urls", nargs=-1, metavar="[URL]...")
@click.option(
    "-i",
    "--input-file",
    type=click.File("r", encoding="utf-8"),
    help="Also add the URLs in this file, one a line (`-` reads stdin; blank lines and "
    "lines starting with # are skipped), like aria2c -i.",
)
@click.option("--filename", help="Save as this plain file name (one URL only).")
@click.option("--sha256", help="Expected SHA-256 of the file (hex); checked when complete.")
@click.option("--preset", help="Transcode when done, e.g. mp4, mp3 or remux-mp4.")
@click.option(
    "--max-speed",
    type=click.FloatRange(0, 1e6, min_open=True),
    metavar="MB/s",
    help="Limit each task's speed, in megabytes (10^6 bytes) per second, e.g. 2.5.",
)
@click.option("--wait", is_flag=True, help="Show live progress bars until finished.")
@click.option(
    "--source",
    type=click.Choice(["auto", "http", "media"]),
    help="auto (default): media for video sites and .m3u8/.mpd, else a file; http: a file;"
    " media: through yt-dlp (needs the [media] extra).",
)
@click.option("--format", "media_format", help="yt-dlp format selector, e.g. 'ba/b' for audio.")
@click.option("--no-playlist", is_flag=True, help="Only the item a playlist URL points at.")
@json_option
@remote_options
def add(
    urls: tuple[str, ...],
    input_file: TextIO | None,
    filename: str | None,
    sha256: str | None,
    preset: str | None,
    max_speed: float | None,
    wait: bool,
    source: str | None,
    media_format: str | None,
    no_playlist: bool,
    as_json: bool,
    server: str,
    api_key: str | None,
) -> None:
    """Add downloads: the URLs given, then those in -i FILE. With --wait, exit non-zero if
    any of them fails."""
    wanted = [*urls, *(_url_lines(input_file) if input_file is not None else [])]
    if not wanted:
        raise click.UsageError("no URL: give one or more, or -i FILE")
    if filename and len(wanted) > 1:
        raise click.UsageError("--filename names one file; give one URL with it")

    async def work(client: ProgressClient) -> tuple[list[TaskRecord], list[str]]:
        async def create(url: str) -> TaskRecord:
            return await client.create(
                url,
                filename=filename,
                sha256=sha256,
                preset=preset,
                source=source,
                format=media_format,
                playlist=False if no_playlist else None,
                max_speed_mbps=max_speed,
            )

        # A refused URL does not stop the others; it is reported, and the exit is non-zero.
        records, problems = await _each(wanted, create)
        if not wait or not records:
            return records, problems
        ids = [record["task_id"] for record in records]
        with LiveView(stderr_console()) as view:
            for record in records:
                view.add(record)
            await follow(client, view, ids)
        return [await client.get(task_id) for task_id in ids], problems

    records, problems = run(work, Remote(server, api_key))
    _print_records(records, as_json)
    _report(problems, exit_now=not wait)
    if wait:
        _exit_for_failures(records, also_failed=bool(problems))


def _url_lines(source: TextIO) -> list[str]:
    """The URLs of a list file: one a line; blank lines and # comments skipped."""
    lines = (line.strip() for line in source)
    return [line for line in lines if line and not line.startswith("#")]


@click.command("ls")
@click.option(
    "--state",
    "states",
    multiple=True,
    type=click.Choice(STATES),
    help="Only tasks in this state (repeatable).",
)
@json_option
@remote_options
def list_tasks(states: tuple[str, ...], as_json: bool, server: str, api_key: str | None) -> None:
    """List tasks, finished ones included, oldest first."""
    records = run(lambda client: client.list(states or None), Remote(server, api_key))
    if as_json:
        echo_json(records)
    elif records:
        click.echo(task_rows(records))
    else:
        click.echo("No tasks.", err=True)


@click.command()
@click.argument("task_id")
@json_option
@remote_options
def show(task_id: str, as_json: bool, server: str, api_key: str | None) -> None:
    """Show one task in full (ID may be a unique prefix)."""

    async def work(client: ProgressClient) -> TaskRecord:
        [resolved] = await resolve_ids(client, (task_id,))
        return await client.get(resolved)

    record = run(work, Remote(server, api_key))
    if as_json:
        echo_json(record)
    else:
        click.echo(describe(record))


@click.command(short_help="Live progress bars until the tasks finish.")
@click.argument("task_ids", nargs=-1, metavar="[ID]...")
@click.option("--follow", "forever", is_flag=True, help="Keep watching (and adding new tasks).")
@remote_options
def watch(task_ids: tuple[str, ...], forever: bool, server: str, api_key: str | None) -> None:
    """Live progress bars until the tasks finish; non-zero exit if one fails.

    Without IDs, every unfinished task of this key, and any added meanwhile, until none is
    pending, downloading or processing.
    """

    async def work(client: ProgressClient) -> list[str]:
        records = []
        if task_ids:
            records = [await client.get(task_id) for task_id in await resolve_ids(client, task_ids)]
        with LiveView(stderr_console()) as view:
            for record in records:
                view.add(record)
            await follow(
                client,
                view,
                [r["task_id"] for r in records],
                everything=not task_ids,
                forever=forever,
            )
        if not view.views:
            click.echo("Nothing is running.", err=True)
        return [v.task_id for v in view.failures()]

    failed = run(work, Remote(server, api_key))
    if failed:
        raise SystemExit(1)


def _action_command(name: str, doc: str) -> click.Command:
    @click.argument("task_ids", nargs=-1, required=True, metavar="ID...")
    @json_option
    @remote_options
    def command(task_ids: tuple[str, ...], as_json: bool, server: str, api_key: str | None) -> None:
        async def work(client: ProgressClient) -> tuple[list[TaskRecord], list[str]]:
            method: Callable[[str], Awaitable[TaskRecord]] = getattr(client, name)
            return await _each(await resolve_ids(client, task_ids), method)

        records, problems = run(work, Remote(server, api_key))
        _print_records(records, as_json)
        _report(problems)

    command.__doc__ = doc
    return click.command(name)(command)


pause = _action_command("pause", "Pause tasks, keeping what was downloaded.")
resume = _action_command("resume", "Resume paused tasks from where they stopped.")
cancel = _action_command("cancel", "Cancel tasks.")
retry = _action_command("retry", "Retry failed or cancelled tasks (resuming where possible).")


@click.command("rm")
@click.argument("task_ids", nargs=-1, required=True, metavar="ID...")
@click.option("--delete-file", is_flag=True, help="Also delete the downloaded file.")
@remote_options
def remove(task_ids: tuple[str, ...], delete_file: bool, server: str, api_key: str | None) -> None:
    """Delete tasks (the file stays unless --delete-file)."""

    async def work(client: ProgressClient) -> tuple[list[str], list[str]]:
        async def delete(task_id: str) -> str:
            await client.delete(task_id, delete_file=delete_file)
            return task_id

        return await _each(await resolve_ids(client, task_ids), delete)

    deleted, problems = run(work, Remote(server, api_key))
    for task_id in deleted:
        click.echo(f"Deleted {task_id}" + (" and its file" if delete_file else ""))
    _report(problems)


async def _each(
    items: list[str], action: Callable[[str], Awaitable[T]]
) -> tuple[list[T], list[str]]:
    """Apply `action` to every task id (or URL), collecting refusals instead of stopping
    at the first."""
    done: list[T] = []
    problems: list[str] = []
    for item in items:
        try:
            done.append(await action(item))
        except ApiError as exc:
            problems.append(f"{item}: {exc.message} ({exc.type})")
    return done, problems


def _report(problems: list[str], exit_now: bool = True) -> None:
    for problem in problems:
        click.echo(f"Error: {problem}", err=True)
    if problems and exit_now:
        raise SystemExit(1)


def _print_records(records: list[TaskRecord], as_json: bool) -> None:
    if as_json:
        echo_json(records)
    elif records:
        click.echo(task_rows(records))


def _exit_for_failures(records: list[TaskRecord], also_failed: bool = False) -> None:
    unfinished = [r for r in records if r["state"] != "completed"]
    for record in unfinished:
        error = record.get("error")
        reason = f": {error['type']}: {error['message']}" if error else ""
        click.echo(f"Error: task {record['task_id']} {record['state']}{reason}", err=True)
    if unfinished or also_failed:
        raise SystemExit(1)


COMMANDS = (add, list_tasks, show, watch, pause, resume, cancel, retry, remove)


def register(group: click.Group) -> None:
    for command in COMMANDS:
        group.add_command(command)
