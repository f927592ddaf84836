"""`serve` options: built from the Settings fields, so each default, range and env var is the
one Settings states; parsed as a user types them, refused with a clear message when bad."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from progress_server.cli import main, serve
from progress_server.settings import OPTION, Settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("PROGRESS_SERVER_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))


def parsed(*args: str, env: dict[str, str] | None = None) -> Settings:
    """The Settings `serve ARGS` would run with (parsing only: no server starts)."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in (env or {}).items():
            patch.setenv(name, value)
        ctx = serve.make_context("serve", list(args))
    return Settings(**ctx.params)


def refusal(*args: str) -> str:
    with pytest.raises(click.UsageError) as refused:
        serve.make_context("serve", list(args))
    return refused.value.format_message()


def option_fields() -> list[str]:
    return [f.name for f in fields(Settings) if OPTION in f.metadata]


def test_nothing_typed_is_exactly_the_settings_defaults(tmp_path: Path) -> None:
    settings = parsed()
    assert settings == Settings()
    assert settings.data_dir == tmp_path / "xdg" / "progress-server"


def test_every_option_is_in_help_with_its_env_var() -> None:
    result = CliRunner().invoke(main, ["serve", "--help"])
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    for name in option_fields():
        param = next(p for p in serve.params if p.name == name)
        assert isinstance(param, click.Option)
        flag = param.opts[0]
        assert flag in text
        assert f"PROGRESS_SERVER_{flag[2:].upper().replace('-', '_')}" in text
        assert param.help and " ".join(param.help.split()) in text
    assert "PROGRESS_SERVER_PORT; default: 8000; 0<=x<=65535]" in text
    assert "$XDG_DATA_HOME/progress-server or ~/.local/share/progress-server" in text


def test_flags_and_environment_become_settings(tmp_path: Path) -> None:
    settings = parsed(
        "--port",
        "9001",
        "--min-speed",
        "1000",
        "--on-complete",
        "notify.sh --title 'a b'",
        "--allow-network",
        "10.0.0.0/8",
        "--allow-network",
        "192.168.1.10",
        "--deny-private-networks",
        env={
            "PROGRESS_SERVER_MAX_CONCURRENT": "7",
            "PROGRESS_SERVER_SPEED_LIMIT": "2.5",
            "PROGRESS_SERVER_WEBHOOK": "https://hooks.example/progress",
            "PROGRESS_SERVER_MIN_FREE_SPACE": "0",
            "PROGRESS_SERVER_DATA_DIR": str(tmp_path / "here"),
            "PROGRESS_SERVER_LOG_FORMAT": "json",
        },
    )
    assert settings == Settings(
        port=9001,
        min_speed_bps=1000.0,
        on_complete=("notify.sh", "--title", "a b"),
        allow_networks=("10.0.0.0/8", "192.168.1.10"),
        deny_private_networks=True,
        max_concurrent=7,
        speed_limit_mbps=2.5,
        webhook_url="https://hooks.example/progress",
        min_free_bytes=0,
        data_dir=tmp_path / "here",
        log_format="json",
    )


def test_repeatable_option_takes_several_values_from_its_env_var() -> None:
    settings = parsed(env={"PROGRESS_SERVER_ALLOW_NETWORK": "10.0.0.0/8 ::1"})
    assert settings.allow_networks == ("10.0.0.0/8", "::1")


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (("--port", "70000"), "0<=x<=65535"),
        (("--speed-limit", "0"), "not in the range x>0"),
        (("--max-concurrent", "0"), "1<=x<=1000"),
        (("--webhook", "ftp://example.com/"), "must be an http:// or https:// URL"),
        (("--allow-network", "nonsense"), "'nonsense' is not an address or CIDR network"),
        (("--on-complete", "notify.sh 'unclosed"), "No closing quotation"),
        (("--log-format", "xml"), "'xml' is not one of 'text', 'json'"),
    ],
)
def test_bad_values_are_refused_with_the_reason(args: tuple[str, ...], reason: str) -> None:
    assert reason in refusal(*args)
